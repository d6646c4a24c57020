import pandas as pd
import pytest
import torch

from helpers import config, criteria, data, finetune, models, pruning, training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke-profile model trained for two quick epochs, and its data."""
    p = config.get_profile("smoke", epochs=2, synthetic_train_per_class=8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(config.ARTIFACTS_ENV, str(tmp_path_factory.mktemp("art")))
        d = data.load_data(p)
    model = models.create_model(p)
    training.fit(model, d, p, tmp_path_factory.mktemp("fit") / "s.pt", models.spec_for(p))
    return p, d, model.eval()


def test_iteration_targets():
    assert finetune.iteration_targets(0.5, 0.05) == pytest.approx([0.05 * i for i in range(1, 11)])
    assert finetune.iteration_targets(0.73, 0.25) == pytest.approx([0.25, 0.5, 0.73])
    with pytest.raises(pruning.PruningError, match="step_fraction must lie in"):
        finetune.iteration_targets(0.5, 0)


def test_one_shot_and_iterative_spend_the_same_budget(trained, tmp_path):
    p, d, model = trained
    ref = data.class_balanced_sample(d.train, 1, 0)
    ft = finetune.finetune_profile(p, 0.02)
    budget = finetune.budget_steps(d, p, 1.5)
    s = criteria.compute_scores(model, ref, "weight")
    counts = pruning.global_counts(model, s["filter"], 0.5)
    oneshot, h1 = finetune.one_shot(pruning.prune_filters(model, s["filter"], counts), d, ft,
                                    tmp_path / "one", budget, "vgg16_bn")
    it, h2 = finetune.iterative(model, d, ref, ft, tmp_path / "it", "weight", 0.5, 0.2, budget, "vgg16_bn")
    assert h1["steps"].sum() == h2["steps"].sum() == budget
    assert h2["stage"].nunique() == 3  # 0.2, 0.4, 0.5
    kept = sum(pruning.kept_filters(it).values())
    assert abs(kept - sum(counts.values())) <= 2


def test_iterative_resumes_at_the_step_it_stopped_in(trained, tmp_path, monkeypatch):
    p, d, model = trained
    ref = data.class_balanced_sample(d.train, 1, 0)
    ft = finetune.finetune_profile(p, 0.02)
    first, _ = finetune.iterative(model, d, ref, ft, tmp_path, "weight", 0.4, 0.2, 10, "vgg16_bn")
    (tmp_path / "step02.pt").unlink()  # interrupted before the second step was saved
    calls = []
    original = criteria.compute_scores
    monkeypatch.setattr(criteria, "compute_scores", lambda *a, **k: calls.append(1) or original(*a, **k))
    again, _ = finetune.iterative(model, d, ref, ft, tmp_path, "weight", 0.4, 0.2, 10, "vgg16_bn")
    assert len(calls) == 1  # step 1 was loaded, only step 2 recomputed
    x = data.normalize(d.test.x[:8])
    assert torch.equal(first.eval()(x), again.eval()(x))  # same result as the uninterrupted run


def test_ratio_sweep_has_the_control_and_resumes(trained, tmp_path):
    p, d, model = trained
    ft = finetune.finetune_profile(p, 0.02)
    ref = data.class_balanced_sample(d.train, 1, 0)
    scores = {n: criteria.compute_scores(model, ref, n)["filter"] for n in ("weight", "random")}
    sweep = finetune.ratio_sweep(model, scores, d, ft, [0.2, 0.5], 6, tmp_path, "vgg16_bn")
    assert list(zip(sweep["criterion"], sweep["ratio"])) == [
        ("none", 0.0), ("weight", 0.2), ("weight", 0.5), ("random", 0.2), ("random", 0.5)]
    assert (sweep["steps"] == 6).all()
    control = sweep.iloc[0]
    assert control["filters_removed"] == 0 and control["params_reduction"] == 1
    assert sweep["filters_removed"].iloc[1:].tolist() == pytest.approx([0.2, 0.5, 0.2, 0.5], abs=0.01)
    assert (sweep["params_reduction"].iloc[1:] > 1).all()
    again = finetune.ratio_sweep(model, scores, d, ft, [0.2, 0.5], 6, tmp_path, "vgg16_bn")
    pd.testing.assert_frame_equal(sweep, again)  # every run resumed from its finished state
    with pytest.raises(pruning.PruningError, match="sweep ratio"):
        finetune.ratio_sweep(model, scores, d, ft, [1.2], 6, tmp_path, "vgg16_bn")


def test_within_points_picks_the_largest_reduction_within_the_band():
    sweep = pd.DataFrame({
        "criterion": ["none", "a", "a", "a", "b", "b"],
        "ratio": [0.0, 0.1, 0.25, 0.4, 0.1, 0.25],
        "filters_removed": [0.0, 0.1, 0.25, 0.4, 0.1, 0.25],
        "test_acc": [52.0, 50.5, 49.3, 45.0, 48.0, 47.0],
        "params_reduction": [1.0, 1.3, 2.0, 3.5, 1.3, 2.0],
        "flops_reduction": [1.0, 1.2, 1.6, 2.5, 1.2, 1.6]})
    reach = finetune.within_points(sweep, baseline_acc=50.0).set_index("criterion")
    assert list(reach.index) == ["a", "b"]  # the unpruned control is not a criterion
    assert reach.loc["a", "ratio"] == 0.25 and reach.loc["a", "params_reduction"] == 2.0
    assert pd.isna(reach.loc["b", "ratio"])  # never within 1 point


def test_best_run_is_chosen_on_validation_never_test():
    import pandas as pd
    runs = pd.DataFrame([{"criterion": "lrp", "schedule": "oneshot", "best_val_acc": 50.0, "test_acc": 90.0},
                         {"criterion": "lrp", "schedule": "iterative", "best_val_acc": 51.0, "test_acc": 10.0},
                         {"criterion": "weight", "schedule": "oneshot", "best_val_acc": 99.0, "test_acc": 99.0}])
    assert finetune.best_run(runs, "lrp") == "lrp_iterative"
    assert finetune.best_run(runs.drop(columns="test_acc"), "lrp") == "lrp_iterative"  # test never read
    with pytest.raises(ValueError, match="no fine-tuned run of 'taylor'"):
        finetune.best_run(runs, "taylor")
