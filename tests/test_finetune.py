import pytest
import torch

from helpers.core import data
from helpers.methods import criteria, finetune, pruning
from helpers.studies import recipe

pytestmark = pytest.mark.usefixtures("no_collapse_guard")


@pytest.fixture(scope="module")
def trained(trained_smoke):
    return trained_smoke


def test_iteration_targets():
    assert finetune.iteration_targets(0.5, 0.05) == pytest.approx([0.05 * i for i in range(1, 11)])
    assert finetune.iteration_targets(0.73, 0.25) == pytest.approx([0.25, 0.5, 0.73])
    with pytest.raises(pruning.PruningError, match="step_fraction must lie in"):
        finetune.iteration_targets(0.5, 0)


def test_one_shot_and_iterative_spend_the_same_budget(trained, tmp_path):
    p, d, model = trained
    ref = data.class_balanced_sample(d.train, 1, 0)
    ft = recipe.apply(p, {"lr": 0.02, "kd_alpha": 0.0})
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
    ft = recipe.apply(p, {"lr": 0.02, "kd_alpha": 0.0})
    first, _ = finetune.iterative(model, d, ref, ft, tmp_path, "weight", 0.2, 0.1, 20, "vgg16_bn")
    (tmp_path / "step02.pt").unlink()  # interrupted before the second step was saved
    calls = []
    original = criteria.compute_scores
    monkeypatch.setattr(criteria, "compute_scores", lambda *a, **k: calls.append(1) or original(*a, **k))
    again, _ = finetune.iterative(model, d, ref, ft, tmp_path, "weight", 0.2, 0.1, 20, "vgg16_bn")
    assert len(calls) == 1  # step 1 was loaded, only step 2 recomputed
    x = data.normalize(d.test.x[:8])
    assert torch.equal(first.eval()(x), again.eval()(x))  # same result as the uninterrupted run
