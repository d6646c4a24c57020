"""Notebook 08's networks: the headline networks found from the saved tables, the one 07
quantizes chosen on validation, and the results figure drawn from them."""
import matplotlib
import pandas as pd
import pytest

from helpers.core import checkpoint, config
from helpers.reporting import plots
from helpers.studies import results

matplotlib.use("Agg")

HEAD = pd.DataFrame([
    {"route": "compute", "criterion": "lrp", "filters_removed_or_sparsity": 0.15, "weight_bits": 32,
     "compression_x": 1.3},
    {"route": "compute", "criterion": "taylor", "filters_removed_or_sparsity": 0.15, "weight_bits": 32,
     "compression_x": 1.5},
    {"route": "compute", "criterion": "random", "filters_removed_or_sparsity": None, "weight_bits": None,
     "compression_x": None},
    {"route": "size", "criterion": "weight", "filters_removed_or_sparsity": 0.7, "weight_bits": 6,
     "compression_x": 13.0},
    {"route": "combined", "criterion": "lrp", "filters_removed_or_sparsity": 0.5, "weight_bits": 8,
     "compression_x": 17.0}])


def _row(route, criterion, point, seed, bits, val, test, size, status="ok", compression=1.0, fraction=None):
    return {"route": route, "criterion": criterion, "point": point, "seed": seed, "weight_bits": bits, "status": status,
            "val_acc": val, "test_acc": test, "size_MB": size, "compression_x": compression, "fraction": fraction}


PER_SEED = pd.DataFrame([
    _row("compute", "lrp", 0.15, 0, 32, 56.0, 57.0, 2.8, compression=1.3),
    _row("compute", "lrp", 0.3, 0, 32, 50.0, 51.0, 2.0, compression=1.9),   # not the headline point
    _row("compute", "taylor", 0.15, 0, 32, 56.5, 57.9, 2.6, compression=1.5),
    _row("compute", "taylor", 0.15, 1, 32, 56.9, 56.1, 2.6, compression=1.5),  # best on validation, not on test
    _row("compute", "taylor", 0.15, 2, 32, 99.0, 99.0, 2.6, status="diverged", compression=1.5),
    _row("size", "weight", 0.7, 0, 6, 56.0, 57.0, 0.29),
    _row("size", "weight", 0.7, 1, 6, 56.2, 56.6, 0.31),
    _row("size", "weight", 0.7, 0, 8, 56.3, 57.1, 0.40),                    # another weight grid
    _row("combined", "lrp", 0.5, 0, 8, 55.0, 55.5, 0.22, fraction=0.15)])
RECIPES = pd.DataFrame([{"lr": 0.01, "kd_alpha": 0.0, "status": "ok", "val_acc": 40.0},
                        {"lr": 0.03, "kd_alpha": 0.9, "status": "ok", "val_acc": 45.0}])


@pytest.fixture
def saved():
    return {"headline": HEAD, "headline_per_seed": PER_SEED, "finetune_recipe": RECIPES}


def test_headline_runs_are_the_finished_runs_at_each_headline_point_and_grid(saved):
    runs = results.headline_runs(saved, config.get_profile("smoke"))
    assert sorted(runs["run"]) == sorted([
        "routes_lr0.03_kd0.9/compute_lrp_0.15_s0", "routes_lr0.03_kd0.9/compute_taylor_0.15_s0",
        "routes_lr0.03_kd0.9/compute_taylor_0.15_s1", "routes_lr0.03_kd0.9/size_weight_0.7_s0",
        "routes_lr0.03_kd0.9/size_weight_0.7_s1", "routes_lr0.03_kd0.9/combined_f0.15_lrp_0.5_s0"])
    assert set(runs.loc[runs["route"] == "size", "weight_bits"]) == {6}


def test_07_quantizes_the_most_compressed_compute_network_in_its_best_seed_on_validation(saved):
    best = results.best_network(saved, config.get_profile("smoke"))
    assert best == "routes_lr0.03_kd0.9/compute_taylor_0.15_s1"  # seed 0 is better on test: never read
    assert results.network_label(best) == "compute route, taylor, 0.15, seed 1"
    assert results.network_label("r/combined_f0.15_epsilon_plus_flat_0.5_s3") == \
        "combined route from 0.15 of the filters, epsilon_plus_flat, 0.5, seed 3"


def _networks(saved):
    p = config.get_profile("smoke")
    runs = results.headline_runs(saved, p)
    lat = pd.DataFrame([{"route": r, "criterion": c, "latency_b1_ms": ms, "latency_b256_ms": 100 * ms} for r, c, ms in (
        ("", "baseline", 5.0), ("", "lrp", 3.0), ("", "weight", 3.1), ("compute", "lrp", 4.0),
        ("compute", "taylor", 3.9), ("size", "weight", 5.1), ("combined", "lrp", 4.1))])
    tables = {**saved, "baseline_metrics": pd.DataFrame([{"test_acc": 57.8, "size_MB": 3.85}]),
              "quantization_results": pd.DataFrame([{"variant": "int8 static", "network": "compute route, taylor",
                                                     "test_acc": 56.0, "size_MB": 0.7, "latency_b1_ms": 2.0}]),
              "finetune_results": pd.DataFrame([_row("report", c, 0.8, s, 32, 13.0, acc, 0.34, compression=12.0)
                                                for c, s, acc in (("lrp", 0, 12.0), ("lrp", 1, 13.0),
                                                                  ("weight", 0, 15.7), ("weight", 1, 15.7))])}
    return results.networks(tables, runs, lat)


def test_the_figures_networks_carry_seed_means_and_spreads(saved):
    nets = _networks(saved).set_index("label")
    taylor = nets.loc["taylor, compute route"]
    assert taylor.test_acc == pytest.approx(57.0) and taylor.test_acc_std == pytest.approx(1.2728, abs=1e-4)
    assert taylor.n == 2 and taylor.latency_b1_ms == 3.9  # the diverged seed is not a result
    assert nets.loc["weight, size route", "size_MB"] == pytest.approx(0.30)
    assert nets.loc["compute route, taylor, int8 static", "group"] == "int8 static"
    assert nets.loc["lrp, report's operating point", "test_acc"] == pytest.approx(12.5)


def test_the_results_figure_shows_the_headline_networks_with_clean_labels(saved):
    nets = _networks(saved)
    fig = plots.pareto(nets)
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert labels == ["lrp", "taylor", "weight", "baseline", "compute route", "size route", "combined route",
                      "int8 static", "report's operating point", "Pareto front (headline networks)"]
    low, high = fig.axes[0].get_ylim()
    assert low > 15.7 and high > 57.9  # the headline networks fill the axis; the report point sits below
    note = [t.get_text() for t in fig.axes[0].texts]
    assert note == ["report's operating point (below): lrp 12.5 %, weight 15.7 %"]


CPU = config.get_profile("cpu")


@pytest.mark.skipif(not (CPU.figures / "lowdata_confirm.csv").exists(),
                    reason="the cpu results predate 05's confirmation")
def test_the_cpu_report_is_what_its_tables_generate_and_a_planted_number_is_caught(tmp_path, monkeypatch):
    import re
    import shutil
    assert results.stale_report(CPU) == [], "REPORT.md is stale: rerun notebook 08 of the cpu profile"
    shutil.copytree(CPU.figures, tmp_path / "cpu",
                    ignore=shutil.ignore_patterns("*.png", "*.svg", "notebooks", "screens"))
    monkeypatch.setattr(config, "FIGURES_ROOT", tmp_path)
    path = config.get_profile("cpu").figures / "REPORT.md"
    text = path.read_text()
    shows = text.index("## What the numbers show")
    number = re.compile(r"\d+\.\d\d")
    m = number.search(text, shows)
    path.write_text(text[:m.start()] + f"{float(m[0]) + 0.01:.2f}" + text[m.end():])
    assert results.stale_report(config.get_profile("cpu")) == ["body"]
    verdict = text.index("<!-- verdict:start -->")
    m = number.search(text, verdict)
    path.write_text(text[:m.start()] + f"{float(m[0]) + 0.01:.2f}" + text[m.end():])
    assert results.stale_report(config.get_profile("cpu")) == ["verdict"]


def test_a_profile_without_confirmation_reads_an_empty_confirmation_table(tmp_path, monkeypatch):
    """A subset too small for 05's confirmation (``lowdata_confirm_per_class`` 0) writes no
    ``lowdata_confirm`` table: 08 reads it as empty, its verdict table keeps the fine-tuned regimes
    only; a profile that asked for the confirmation still gets the error naming notebook 05."""
    monkeypatch.setattr(config, "FIGURES_ROOT", tmp_path)
    none = config.get_profile("smoke", lowdata_confirm_per_class=0)
    none.figures.mkdir(parents=True)
    t = results.load_tables(none, ("lowdata_confirm",))
    assert t["lowdata_confirm"].empty and "ref_per_class" in t["lowdata_confirm"]
    from helpers.studies import verdict
    assert verdict.without_fine_tuning(pd.DataFrame(), t["lowdata_confirm"]) == []
    with pytest.raises(checkpoint.CheckpointError, match="lowdata_confirm.csv is missing: run notebook 05"):
        results.load_tables(config.get_profile("smoke", lowdata_confirm_per_class=1), ("lowdata_confirm",))
