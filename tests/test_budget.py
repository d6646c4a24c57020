"""The fine-tuning budget study (``python -m helpers.studies.budget``): its summary against hand
computations, its runs on the headline's code path, and its command line."""
import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from helpers.core import checkpoint, config
from helpers.methods import finetune
from helpers.studies import budget, recipe, routes

pytestmark = pytest.mark.usefixtures("no_collapse_guard")


def _rows():
    """One point, budgets 0.5 and 2, seeds 0 and 1, plus a diverged run that must not count."""
    r = dict(route="size", criterion="weight", point=0.8, status="ok", compression_x=12.5, flops_x=1.0)
    return pd.DataFrame([
        {**r, "budget_epochs": 0.5, "seed": 0, "val_acc": 55.0, "test_acc": 56.0, "steps": 10, "train_s": 5.0},
        {**r, "budget_epochs": 0.5, "seed": 1, "val_acc": 55.4, "test_acc": 56.6, "steps": 10, "train_s": 7.0},
        {**r, "budget_epochs": 2.0, "seed": 0, "val_acc": 57.0, "test_acc": 57.5, "steps": 40, "train_s": 20.0},
        {**r, "budget_epochs": 2.0, "seed": 1, "val_acc": 57.2, "test_acc": 58.3, "steps": 40, "train_s": 22.0},
        {**r, "budget_epochs": 2.0, "seed": 2, "val_acc": 1.0, "test_acc": 1.0, "steps": 40, "train_s": 9.0,
         "status": "diverged"}])


def test_summary_against_a_hand_computation():
    t = budget.summary(_rows(), baseline_val=58.0, baseline_test=58.5).set_index("budget_epochs")
    assert list(t["n"]) == [2, 2]  # the diverged run is excluded
    assert t.loc[0.5, "val_drop"] == pytest.approx(58.0 - 55.2)
    assert t.loc[2.0, "val_drop"] == pytest.approx(58.0 - 57.1)
    assert t.loc[2.0, "test_drop"] == pytest.approx(58.5 - 57.9)
    assert t.loc[2.0, "test_acc_std"] == pytest.approx(np.std([57.5, 58.3], ddof=1))
    assert list(t["within"]) == [False, True]
    # gain of 2 epochs over 0.5, paired by seed: differences 1.5 and 1.7; t(0.975, 1) = 12.7062
    half = 12.7062 * np.std([1.5, 1.7], ddof=1) / np.sqrt(2)
    assert t.loc[2.0, "gain_mean"] == pytest.approx(1.6)
    assert t.loc[2.0, "gain_low"] == pytest.approx(1.6 - half, abs=1e-3)
    assert t.loc[2.0, "gain_high"] == pytest.approx(1.6 + half, abs=1e-3)
    assert np.isnan(t.loc[0.5, "gain_mean"])  # the smallest budget is the reference


def test_sentences_say_from_which_budget_a_point_is_within_one_point():
    within, = budget.sentences(budget.summary(_rows(), 58.0, 58.5))
    assert "within 1 point from 2 epochs (40 optimizer steps, 21 s of training per run here)" in within
    assert "0.5: 2.80, 2: 0.90" in within and "12.5x smaller file" in within and "n=2 seeds" in within
    never, = budget.sentences(budget.summary(_rows(), 60.0, 58.5))
    assert "not within 1 point at any budget tried (up to 2 epochs" in never


@pytest.fixture(scope="module")
def trained(trained_smoke):
    p, d, model = trained_smoke
    return p, d, model, {"lr": 0.02, "kd_alpha": 0.0}


def test_runs_share_the_series_runs_pair_seeds_and_resume(trained, monkeypatch):
    p, d, model, chosen = trained
    p = dataclasses.replace(p, finetune_epochs=0.1)
    study = (("size", "weight", 0.5), ("compute", "weight", 0.3))
    rows = budget.runs(study, (0.2, 0.1), [0, 1], model, d, p, chosen)
    assert len(rows) == 8 and set(rows["status"]) == {"ok"}
    assert list(rows["budget_epochs"][:2]) == [0.1, 0.2]  # budgets in order, seed by seed
    small, large = (rows[rows["budget_epochs"] == b] for b in (0.1, 0.2))
    assert (small["steps"] == finetune.budget_steps(d, p, 0.1)).all()
    assert (large["steps"] == finetune.budget_steps(d, p, 0.2)).all()
    assert (large["steps"].values > small["steps"].values).all()
    # the run at the series' budget is notebook 06's own run (same folder, same name)
    assert (recipe.folder(p, chosen) / routes.run_name("compute", "weight", 0.3, 1) / "result.json").exists()
    assert budget.folder(p, chosen, 0.2) != recipe.folder(p, chosen)
    assert (budget.folder(p, chosen, 0.2) / routes.run_name("compute", "weight", 0.3, 1) / "result.json").exists()
    # the same seed prunes the same network at every budget (weight scores read no images)
    c = rows[rows["route"] == "compute"]
    assert c.groupby("seed")["parameters"].nunique().eq(1).all()
    monkeypatch.setattr(routes.finetune, "fit", lambda *a, **k: pytest.fail("a finished run must not train again"))
    again = budget.runs(study, (0.1, 0.2), [0, 1], model, d, p, chosen)
    pd.testing.assert_frame_equal(again.drop(columns="train_s"), rows.drop(columns="train_s"))


def test_main_writes_the_tables_the_figure_and_the_report_section(trained, tmp_path, monkeypatch):
    p, d, model, chosen = trained
    monkeypatch.setattr(config, "FIGURES_ROOT", tmp_path / "figures")
    monkeypatch.setattr(budget, "load_artifact", lambda a, device: (model, {"metrics": {"test_acc": 5.0}}))
    (tmp_path / "figures" / "smoke").mkdir(parents=True)
    (tmp_path / "figures" / "smoke" / "REPORT.md").write_text("# Results\n\n<!-- headline:start -->\nkept\n"
                                                            "<!-- headline:end -->\n")
    table = budget.main(["--profile", "smoke", "--budgets", "0.05", "0.1", "--point", "compute", "weight", "0.25",
                         "--lr", "0.02", "--kd-alpha", "0"])
    out = tmp_path / "figures" / "smoke"
    assert {"budget.csv", "budget_per_seed.csv", "budget.png", "budget.svg"} <= {f.name for f in out.iterdir()}
    assert list(table["budget_epochs"]) == [0.05, 0.1] and list(table["n"]) == [2, 2]
    text = (out / "REPORT.md").read_text()
    assert "kept" in text and "<!-- budget:start -->" in text and "compute route, weight at 0.25" in text


@pytest.mark.parametrize("args, message", [
    (["--point", "speed", "weight", "0.5"], "route must be compute or size"),
    (["--point", "size", "magic", "0.5"], "unknown criterion 'magic'"),
    (["--point", "size", "weight", "1.5"], "must be in \\(0, 1\\)"),
    (["--point", "size", "weight", "half"], "must be a number"),
    (["--seeds", "1"], "--seeds >= 2"),
    (["--budgets", "0", "1"], "positive --budgets"),
    (["--lr", "0.01"], "both --lr and --kd-alpha"),
])
def test_bad_arguments_are_refused_with_the_reason(args, message, capsys):
    with pytest.raises(SystemExit):
        budget.main(["--profile", "smoke", *args])
    assert re.search(message, capsys.readouterr().err)


def test_a_missing_recipe_table_names_notebook_06(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "FIGURES_ROOT", tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match="run notebook 06"):
        budget.saved_recipe(config.get_profile("smoke"))


def test_the_recipe_is_notebook_06s_choice_on_validation():
    """With no --lr, the study fine-tunes with the recipe of the committed cpu run's table."""
    table = pd.read_csv(config.get_profile("cpu").figures / "finetune_recipe.csv")
    best = table[table["status"] == "ok"].sort_values("val_acc").iloc[-1]
    assert budget.saved_recipe(config.get_profile("cpu")) == {"lr": best["lr"], "kd_alpha": best["kd_alpha"]}
