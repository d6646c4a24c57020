"""The fine-tuning protocol of notebook 06: recipe, seeds, the two routes and the headline."""
import dataclasses
import types

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.core import checkpoint, config, data, measure, models, vocabulary
from helpers.methods import criteria, pruning, quantization, training
from helpers.reporting import report
from helpers.studies import headline, recipe, routes

pytestmark = pytest.mark.usefixtures("no_collapse_guard")


@pytest.fixture(scope="module")
def trained(trained_smoke):
    """The smoke model (conftest) with a fine-tuning recipe."""
    p, d, model = trained_smoke
    return recipe.apply(p, {"lr": 0.02, "kd_alpha": 0.0}), d, model


def _scores(model, d, p, seed, folder):
    return routes.seed_scores(model, d, p, seed, ["weight", "random", "lrp"], folder)


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k][n], b[k][n]) for k in ("filter", "weight") for n in a[k])


def test_seeds_change_the_reference_images_and_random_scores_only(trained, tmp_path):
    p, d, model = trained
    s0, s0_again, s1 = (_scores(model, d, p, s, tmp_path / f"{i}") for i, s in enumerate((0, 0, 1)))
    assert all(_same(s0[n], s0_again[n]) for n in s0)  # same seed: identical
    assert _same(s0["weight"], s1["weight"])  # weight magnitude reads no images and no seed
    assert not _same(s0["random"], s1["random"]) and not _same(s0["lrp"], s1["lrp"])
    r0, r1 = routes.reference(d, p, 0), routes.reference(d, p, 1)
    assert not torch.equal(r0.x, r1.x) and torch.equal(r0.x, routes.reference(d, p, 0).x)


def test_same_seed_gives_the_same_run_and_another_seed_another(trained, tmp_path):
    p, d, model = trained
    s = _scores(model, d, p, 0, tmp_path / "scores")["weight"]
    runs = [routes.run("compute", "weight", 0.3, seed, model, s, d, p, tmp_path / name, 6, model)
            for seed, name in ((0, "a"), (0, "b"), (1, "c"))]
    keep = lambda r: {k: v for k, v in r.items() if k != "train_s"}  # noqa: E731 (wall time differs)
    assert keep(runs[0]) == keep(runs[1])
    assert runs[0]["val_acc"] != runs[2]["val_acc"] or runs[0]["test_acc"] != runs[2]["test_acc"]
    assert runs[0]["parameters"] == runs[2]["parameters"]  # same scores: same network, other data order


def test_compute_route_removes_filters_and_resumes(trained, tmp_path, monkeypatch):
    p, d, model = trained
    s = _scores(model, d, p, 0, tmp_path / "scores")["lrp"]
    row = routes.run("compute", "lrp", 0.4, 0, model, s, d, p, tmp_path, 6, model)
    assert row["status"] == "ok" and row["filters_removed"] == pytest.approx(0.4, abs=0.01)
    assert row["compression_x"] > 1 and row["flops_x"] > 1 and row["steps"] == 6
    monkeypatch.setattr(routes.finetune, "fit", lambda *a, **k: pytest.fail("a finished run must not train again"))
    assert routes.run("compute", "lrp", 0.4, 0, model, s, d, p, tmp_path, 6, model) == row
    with pytest.raises(checkpoint.CheckpointError, match="delete its folder"):
        routes.run("compute", "lrp", 0.4, 0, model, s, d, dataclasses.replace(p, lr=0.5), tmp_path, 6, model)


@pytest.mark.parametrize("stop_points", [10.0, 0.0])
def test_sweep_skips_larger_points_of_a_criterion_collapsed_on_its_first_seed(monkeypatch, smoke, stop_points):
    """Planted validation accuracies against a baseline at 50 %: random collapses on seed 0 at
    the first point (skipped beyond it for every seed); weight collapses on seed 1 only (never
    skipped); with ``sweep_stop_points`` 0 every point runs."""
    planted = {("random", 0): 20.0, ("weight", 1): 20.0}
    ran = []

    def fake_run(route, name, x, seed, *rest, **kw):
        ran.append((name, x, seed))
        return {"criterion": name, "point": x, "seed": seed, "status": "ok", "val_acc": planted.get((name, seed), 49.0)}

    monkeypatch.setattr(routes, "run", fake_run)
    monkeypatch.setattr(routes, "grids", lambda *a, **k: [])  # the weight grids: their own test
    monkeypatch.setattr(routes, "evaluate", lambda *a, **k: {"acc": 50.0})
    p = dataclasses.replace(smoke, sweep_stop_points=stop_points)
    scores = {seed: {"weight": {}, "random": {}} for seed in (0, 1)}
    rows = routes.sweep("size", ["weight", "random"], (0.5, 0.7, 0.9), scores, types.SimpleNamespace(val=None), p,
                        None, 1, None)
    expected = {(n, x, s) for n in ("weight", "random") for x in (0.5, 0.7, 0.9) for s in (0, 1)}
    if stop_points:
        expected -= {("random", x, s) for x in (0.7, 0.9) for s in (0, 1)}
    assert set(ran) == expected and len(ran) == len(expected) == len(rows)


def test_best_report_run_is_chosen_on_validation_never_test():
    runs = pd.DataFrame([{"criterion": "lrp", "seed": 0, "status": "ok", "val_acc": 50.0, "test_acc": 90.0},
                         {"criterion": "lrp", "seed": 1, "status": "ok", "val_acc": 51.0, "test_acc": 10.0},
                         {"criterion": "lrp", "seed": 2, "status": "diverged", "val_acc": 80.0, "test_acc": 1.0},
                         {"criterion": "weight", "seed": 0, "status": "ok", "val_acc": 99.0, "test_acc": 99.0}])
    runs["run"] = [f"r/report_{c}_0.8_s{n}" for c, n in zip(runs["criterion"], runs["seed"])]
    assert routes.best_run(runs, "lrp") == "r/report_lrp_0.8_s1"  # a diverged run is never chosen
    assert routes.best_run(runs.drop(columns="test_acc"), "lrp") == "r/report_lrp_0.8_s1"  # test never read
    with pytest.raises(ValueError, match="no fine-tuned run of 'taylor'"):
        routes.best_run(runs, "taylor")


def test_report_route_gives_every_criterion_the_reports_architecture(trained, tmp_path):
    p, d, model = trained
    s = _scores(model, d, p, 0, tmp_path / "scores")
    ratios = pruning.report_allocation(model, criteria.weight_magnitude(model), 0.2, p.report_margin)
    counts = pruning.keep_counts(model, ratios)
    rows = [routes.run("report", n, 0.2, 0, model, s[n], d, p, tmp_path, 20, model) for n in ("weight", "lrp")]
    for n, row in zip(("weight", "lrp"), rows):
        assert row["status"] == "ok", row.get("error")
        saved, _ = training.load_model(tmp_path / routes.run_name("report", n, 0.2, 0) / "model.pt")
        assert pruning.kept_filters(saved) == counts  # the report's allocation, whatever the criterion
        assert row["steps"] == 20 and np.isfinite(row["test_loss"])
    assert rows[0]["parameters"] == rows[1]["parameters"]


def test_size_route_holds_the_masks_and_stores_int8_sparse(trained, tmp_path):
    p, d, model = trained
    s = _scores(model, d, p, 0, tmp_path / "scores")["weight"]
    row = routes.run("size", "weight", 0.6, 0, model, s, d, p, tmp_path, 6, model)
    assert row["status"] == "ok", row.get("error")
    assert row["sparsity"] == pytest.approx(0.6, abs=1e-3)  # zeros stayed zero
    out = tmp_path / "size_weight_0.6_s0"
    assert row["sparse_bytes"] == (out / "int8_sparse.pt").stat().st_size
    assert row["size_bytes"] == (out / "int8_sparse.pt.xz").stat().st_size
    dense_int8 = 0.4 * sum(m.weight.numel() for m in criteria.weight_layers(model).values())
    assert row["sparse_bytes"] < 4 * dense_int8  # far below the dense float32 weights
    assert row["compression_x"] == pytest.approx(
        row["compression_x_uncompressed"] * row["sparse_bytes"] / row["size_bytes"])


def test_notebook_08_times_a_masked_run_as_its_folded_float_network(trained, tmp_path, monkeypatch):
    from helpers.core import artifacts
    from helpers.studies import results
    p, d, model = trained
    monkeypatch.setenv(config.ARTIFACTS_ENV, str(tmp_path))
    s = _scores(model, d, p, 0, tmp_path / "scores")["weight"]
    row = routes.run("size", "weight", 0.6, 0, model, s, d, p, artifacts.finetuned(p, "r").path, 4, model)
    net = results._network(p, "size", f"r/{routes.run_name('size', 'weight', 0.6, 0)}")  # no model.pt: folded
    assert row["status"] == "ok" and not any(torch.nn.utils.prune.is_pruned(m) for m in net.modules())
    assert pruning.global_sparsity(net) == pytest.approx(row["sparsity"], abs=1e-6)


def test_weight_grids_measure_the_run_network_again_on_fewer_levels_and_resume(trained, tmp_path, monkeypatch):
    p, d, model = trained
    s = _scores(model, d, p, 0, tmp_path / "scores")["weight"]
    row = routes.run("size", "weight", 0.6, 0, model, s, d, p, tmp_path, 6, model)
    assert row["weight_bits"] == 8
    out = tmp_path / "size_weight_0.6_s0"
    again = routes.measure_size(routes.fine_tuned(out), d, p, model, tmp_path / "again")
    keys = ["val_acc", "test_acc", "size_bytes"]
    assert [again[k] for k in keys] == [row[k] for k in keys]
    grid_p = dataclasses.replace(p, weight_bits=(4, 8))
    (four,) = routes.grids(row, tmp_path, d, grid_p, model)
    assert four["weight_bits"] == 4 and four["sparsity"] == row["sparsity"] and four["size_bytes"] < row["size_bytes"]
    assert {k: four[k] for k in ("route", "criterion", "point", "seed", "steps")} == \
        {k: row[k] for k in ("route", "criterion", "point", "seed", "steps")}
    q, saved = quantization.load_sparse(out / "w4" / "int8_sparse.pt.xz", data.normalize(d.train.x[:2]))
    weights = [v for v in quantization.used_state(q).values() if v.dtype == torch.int8 and v.dim() > 1]
    assert saved["weight_bits"] == 4
    assert min(int(w.min()) for w in weights) >= -8 and max(int(w.max()) for w in weights) <= 7
    assert routes._accuracy(q, d.val, p) == four["val_acc"]  # the file holds the network measured
    monkeypatch.setattr(routes, "measure_size", lambda *a, **k: pytest.fail("a measured grid must be read back"))
    assert routes.grids(row, tmp_path, d, grid_p, model) == [four]
    assert routes.grids({**row, "status": "diverged"}, tmp_path, d, grid_p, model) == []
    assert routes.grids({**row, "route": "compute"}, tmp_path, d, grid_p, model) == []


def test_weight_range_is_torchaos_int8_range_narrowed():
    assert quantization.weight_range(8) == (-128, 127) and quantization.weight_range(6) == (-32, 31)
    with pytest.raises(ValueError, match="weight_bits must be an integer from 2 to 8"):
        quantization.weight_range(9)


def test_sparse_int8_file_reloads_to_the_same_outputs(trained, tmp_path):
    p, d, model = trained
    s = criteria.weight_magnitude(model)
    pruned = pruning.unstructured_prune(model, s, 0.6)
    calib = [data.normalize(d.train.x[:32])]
    q = quantization.quantize(pruned, calib, calib[0][:2])
    sizes = quantization.save_sparse(q, models.spec_of(pruned, p.arch), tmp_path / "q.pt")
    x = data.normalize(d.test.x[:16])
    for path in (tmp_path / "q.pt", tmp_path / "q.pt.xz"):
        again, _ = quantization.load_sparse(path, calib[0][:2])
        assert torch.equal(again(x), q(x))
    assert sizes["xz_bytes"] < sizes["sparse_bytes"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["q.pt", "q.pt.xz"]  # decompressed in memory


def test_iterative_is_a_route_like_the_others(trained, tmp_path, monkeypatch):
    p, d, model = trained
    row = routes.run("iterative", "weight", 0.3, 0, model, {}, d, p, tmp_path, 8, model)  # rounds to 25 %, 30 %
    assert row["status"] == "ok" and row["filters_removed"] == pytest.approx(0.3, abs=0.02), row.get("error")
    assert row["compression_x"] == pytest.approx(measure.parameters(model) / row["parameters"])
    monkeypatch.setattr(routes.finetune, "iterative", lambda *a, **k: pytest.fail("a finished run is read back"))
    again = routes.run("iterative", "weight", 0.3, 0, model, {}, d, p, tmp_path, 8, model)
    assert again["test_acc"] == row["test_acc"] and again["parameters"] == row["parameters"]


def test_masked_fine_tuning_keeps_pruned_weights_at_zero(trained, tmp_path):
    p, d, model = trained
    s = criteria.weight_magnitude(model)
    m = routes.masked(model, s, 0.5, p)
    training.fit(m, d, p, tmp_path / "s.pt", models.spec_of(m, p.arch), max_steps=5)
    assert pruning.global_sparsity(pruning.make_permanent(m)) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.collapse_guard
def test_a_collapsed_run_is_recorded_never_a_result(trained, tmp_path):
    p, d, model = trained
    s = _scores(model, d, p, 0, tmp_path / "scores")["weight"]
    bad = dataclasses.replace(p, lr=10.0)  # at point 0.05 the network begins far above chance, and falls
    row = routes.run("compute", "weight", 0.05, 0, model, s, d, bad, tmp_path, 8, model)
    assert row["status"] == "diverged" and "compute route, weight, 0.05, seed 0" in row["error"]
    rows = pd.DataFrame([row, {"route": "compute", "criterion": "weight", "point": 0.3, "seed": 1, "status": "ok",
                               "val_acc": 10.0, "test_acc": 11.0, "compression_x": 2.0, "flops_x": 1.5,
                               "weight_bits": 32}])
    head = headline.table(rows, baseline_val=10.5, baseline_test=12.0)
    assert head.iloc[0]["n_seeds"] == 1 and head.iloc[0]["test_acc_mean"] == 11.0


def test_recipe_grid_and_choice_on_validation_only():
    p = config.get_profile("smoke", finetune_lrs=(0.01, 0.03), finetune_kd_alphas=(0.0, 0.9))
    assert recipe.grid(p) == [{"lr": 0.01, "kd_alpha": 0.0}, {"lr": 0.03, "kd_alpha": 0.0},
                              {"lr": 0.01, "kd_alpha": 0.9}, {"lr": 0.03, "kd_alpha": 0.9}]
    t = pd.DataFrame({"lr": [0.01, 0.03, 0.01, 0.03], "kd_alpha": [0, 0, 0.9, 0.9],
                      "status": ["ok", "ok", "ok", "diverged"], "val_acc": [50.0, 52.0, 51.0, 99.0],
                      "test_acc": [90.0, 10.0, 10.0, 10.0]})
    assert recipe.choose(t) == {"lr": 0.03, "kd_alpha": 0.0}  # the diverged one is never chosen
    assert recipe.choose(t.drop(columns="test_acc")) == {"lr": 0.03, "kd_alpha": 0.0}
    ft = recipe.apply(p, {"lr": 0.03, "kd_alpha": 0.9})
    assert (ft.lr, ft.kd_alpha, ft.schedule) == (0.03, 0.9, "cosine")
    with pytest.raises(ValueError, match="every recipe diverged"):
        recipe.choose(t.assign(status="diverged"))


def _hand_table():
    """Baseline: validation 60, test 62. lrp: 0.2 qualifies (mean val 59.4), 0.3 does not
    (58.6) although its test accuracy is best; weight: nothing within 1 point."""
    rows = []
    for seed, (v2, v3, w) in enumerate([(59.5, 58.0, 50.0), (59.2, 59.0, 50.0), (59.5, 58.8, 50.0)]):
        rows += [{"route": "compute", "criterion": "lrp", "point": 0.2, "seed": seed, "val_acc": v2,
                  "test_acc": 61.0 + seed, "compression_x": 1.5, "flops_x": 1.2, "status": "ok"},
                 {"route": "compute", "criterion": "lrp", "point": 0.3, "seed": seed, "val_acc": v3,
                  "test_acc": 99.0, "compression_x": 2.5, "flops_x": 1.6, "status": "ok"},
                 {"route": "compute", "criterion": "weight", "point": 0.2, "seed": seed, "val_acc": w,
                  "test_acc": 60.0 - seed, "compression_x": 1.6, "flops_x": 1.2, "status": "ok"}]
    return pd.DataFrame(rows).assign(weight_bits=32)  # every saved row names its grid


def test_headline_is_the_largest_compression_within_one_point_on_validation():
    head = headline.table(_hand_table(), baseline_val=60.0, baseline_test=62.0).set_index("criterion")
    assert list(head.columns) == [c for c in headline.COLUMNS if c != "criterion"]
    lrp = head.loc["lrp"]
    assert lrp["filters_removed_or_sparsity"] == 0.2 and lrp["compression_x"] == 1.5 and lrp["n_seeds"] == 3
    assert lrp["test_acc_mean"] == pytest.approx(62.0) and lrp["test_acc_std"] == pytest.approx(1.0)
    assert lrp["drop_points"] == pytest.approx(0.0)
    assert np.isnan(head.loc["weight", "filters_removed_or_sparsity"])


def test_headline_point_is_the_largest_compression_over_sparsities_and_weight_grids():
    """Validation 60 at baseline. int8: 0.7 within (10x), 0.75 within (12x); 6-bit: 0.7 within
    (13x) although a smaller sparsity than 0.75, 0.75 not (59.0 < 59.0 + tolerance? no: 58.5)."""
    cells = [(0.7, 8, 59.5, 10.0), (0.75, 8, 59.1, 12.0), (0.7, 6, 59.2, 13.0), (0.75, 6, 58.5, 15.0)]
    rows = pd.DataFrame([{"route": "size", "criterion": "weight", "point": sp, "weight_bits": bits, "seed": seed,
                          "status": "ok", "val_acc": val + 0.1 * (seed - 1), "test_acc": 61.0 + seed,
                          "compression_x": x, "flops_x": 1.0}
                         for sp, bits, val, x in cells for seed in range(3)])
    head = headline.table(rows, baseline_val=60.0, baseline_test=62.0).iloc[0]
    assert (head["filters_removed_or_sparsity"], head["weight_bits"], head["compression_x"]) == (0.7, 6, 13.0)
    assert head["n_seeds"] == 3 and head["test_acc_mean"] == pytest.approx(62.0)
    pairs = headline.paired(pd.concat([rows, rows.assign(criterion="lrp", test_acc=rows["test_acc"] - 1)]))
    assert len(pairs) == 4 and set(pairs["weight_bits"]) == {6, 8} and (pairs["mean"] == -1.0).all()
    assert "at 0.7 (6-bit)" in headline._pair_sentences(pairs, head)[0]


def test_headline_selection_never_reads_the_test_split():
    t = _hand_table()
    shuffled = t.assign(test_acc=np.random.default_rng(0).permutation(t["test_acc"].to_numpy()))
    a = headline.table(t, 60.0, 62.0)
    b = headline.table(shuffled, 60.0, 62.0)
    pd.testing.assert_series_equal(a["filters_removed_or_sparsity"], b["filters_removed_or_sparsity"])
    assert headline.common_fraction(a, (0.2, 0.3)) == 0.2


def test_paired_differences_pair_by_seed():
    pairs = headline.paired(_hand_table()).set_index(["point", "criterion"])
    row = pairs.loc[(0.2, "weight")]
    diffs = np.array([61.0 - 60.0, 62.0 - 59.0, 63.0 - 58.0])  # by hand: 1, 3, 5
    half = 4.302652729911275 * diffs.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert row["mean"] == pytest.approx(3.0) and row["half_width"] == pytest.approx(half)
    assert row["resolved"] == bool(3.0 - half > 0)


def test_schedules_table_pairs_iterative_with_the_one_shot_runs():
    t = _hand_table()
    it = t[(t["criterion"] == "lrp") & (t["point"] == 0.2)].assign(
        route="iterative", test_acc=lambda f: f["test_acc"] + 1.0, parameters=50.0, flops=5.0)
    t = t.assign(parameters=100.0, flops=10.0)
    table = headline.schedules(t, it, 0.2)
    assert table.iloc[0]["iterative_minus_oneshot"] == pytest.approx(1.0)
    assert "lrp 0.50x the parameters" in headline.schedules_sentence(table, 100, 4)


def test_a_criterion_whose_iterative_runs_all_diverged_keeps_its_row():
    t = _hand_table().assign(parameters=100.0, flops=10.0)
    it = t[(t["point"] == 0.2) & t["criterion"].isin(["lrp", "weight"])].assign(route="iterative")
    it.loc[it["criterion"] == "weight", "status"] = "diverged"
    table = headline.schedules(t, it, 0.2).set_index("criterion")
    assert list(table.index) == ["lrp", "weight"] and table.loc["weight", "n"] == 0
    assert pd.isna(table.loc["weight", "iterative_minus_oneshot"])
    sentence = headline.schedules_sentence(table.reset_index(), 100, 4)
    assert "weight no pair finished" in sentence and "lrp 1.00x the parameters" in sentence
    assert "weight 1.00x" not in sentence


def test_status_counts_show_every_status_even_when_none_diverged():
    counts = headline.status_counts(_hand_table())
    assert list(counts.columns) == list(vocabulary.STATUSES) and (counts["diverged"] == 0).all()
    assert counts["ok"].sum() == len(_hand_table())


def test_combined_route_is_reported_even_outside_one_point():
    rows = pd.DataFrame([{"route": "combined", "criterion": "weight", "point": 0.7, "fraction": 0.15, "seed": s,
                          "status": "ok", "val_acc": 50.0, "test_acc": a, "compression_x": 15.0, "flops_x": 1.1,
                          "weight_bits": 8}
                         for s, a in enumerate((57.0, 57.5))])
    head = headline.table(rows, baseline_val=57.6, baseline_test=58.8)
    (line,) = headline._combined_sentence(rows, head, 58.8)
    assert "weight (15% of the filters, then 70% of the weights, int8 weights): 15.00x smaller file" in line
    assert "drop 1.55 points), not within 1 point" in line
    assert headline._combined_sentence(rows.iloc[:0], head, 58.8) == []


def test_report_point_sentence_ranks_criteria_and_leaves_out_diverged_runs():
    rows = pd.DataFrame([{"criterion": c, "seed": s, "status": "ok", "test_acc": a, "filters_removed": 0.7}
                         for c, accs in (("lrp", (40.0, 42.0)), ("weight", (45.0, 44.0))) for s, a in enumerate(accs)]
                        + [{"criterion": "taylor", "seed": 0, "status": "diverged", "test_acc": float("nan"),
                            "filters_removed": float("nan")}])
    text = headline.report_point_sentence(rows, 58.8)
    assert "weight 44.50 ± 0.71, lrp 41.00 ± 1.41 %" in text  # best first
    assert "14.30 points below" in text and "far outside 1 point" in text and "1 runs diverged" in text
    assert "taylor" not in text.split("diverged")[0]


def test_report_leads_with_the_headline_section(tmp_path):
    path = tmp_path / "REPORT.md"
    report.update_section(path, "lowdata", "## Low data\nlow")
    report.update_section(path, "headline", "## Headline\n![x](headline.png)")
    text = report.write_report("# Results: cpu profile\n\nbody", path)
    assert text.index("## Headline") < text.index("body") < text.index("## Low data")



def test_the_headline_calls_a_difference_resolved_only_after_holm():
    pairs = pd.DataFrame({"route": "compute", "point": 0.2, "weight_bits": 32, "criterion": ["weight", "taylor"],
                          "n": 5, "mean": [1.0, 0.2], "low": [0.5, 0.01], "high": [1.5, 0.39],
                          "resolved": [True, True], "p": [0.001, 0.04], "half_width": 0.25, "seeds_needed": 5})
    pairs = headline.stats.with_holm(pairs)
    # Holm over 2: 0.001 * 2 = 0.002 survives; 0.04 * 1 = 0.04, but the running max keeps 0.04 < 0.05
    assert pairs["p_holm"].tolist() == pytest.approx([0.002, 0.04])
    pairs = headline.stats.with_holm(pairs.drop(columns=["p_holm", "resolved_holm"]).assign(p=[0.04, 0.03]))
    # 0.03 * 2 = 0.06 fails, and so 0.04 (its running max 0.06) fails too
    assert pairs["resolved_holm"].tolist() == [False, False]
    text = headline._pair_sentences(pairs, pd.DataFrame())[0]
    assert "Resolved after Holm's correction over the 2 comparisons: none." in text
    assert "Resolved read alone but not after the correction: weight at 0.2 (adjusted p 0.06)" in text
    table = headline.paired(_hand_table())
    assert {"p", "p_holm", "resolved_holm"} <= set(table.columns) and (table["p_holm"] >= table["p"]).all()
