import copy
import gc
import time
import weakref

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from helpers.core import config, data, measure, models
from helpers.methods import criteria, pruning, training
from helpers.core.data import Split


def _ref(n=100):
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(n) % 100)


def _vgg(width=0.0625):
    torch.manual_seed(0)
    return models.build_model(models.vgg16_bn_spec(width)).eval()


def _same(a, b, x):
    torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def model_and_scores():
    model = _vgg()
    return model, criteria.compute_scores(model, _ref(), "weight")


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.8, 0.95])
def test_unstructured_sparsity_is_exact(model_and_scores, sparsity):
    model, s = model_and_scores
    pruned = pruning.unstructured_prune(model, s, sparsity)
    n = sum(m.weight.numel() for m in criteria.weight_layers(model).values())
    zeros = round(pruning.global_sparsity(pruned) * n)
    assert zeros == round(sparsity * n)
    assert not any(hasattr(m, "weight_mask") for m in pruned.modules())  # made permanent
    assert pruning.global_sparsity(model) == 0  # the original is untouched


def test_unstructured_removes_the_lowest_scores(model_and_scores):
    model, s = model_and_scores
    pruned = pruning.unstructured_prune(model, s, 0.5)
    layers = criteria.weight_layers(pruned)
    all_scores = torch.cat([s["weight"][n].flatten() for n in layers])
    kept = torch.cat([(m.weight != 0).flatten() for m in layers.values()])
    assert all_scores[kept].min() >= all_scores[~kept].max()


def test_sparse_storage_round_trip_and_size(model_and_scores):
    model, s = model_and_scores
    pruned = pruning.unstructured_prune(model, s, 0.8)
    sparse = pruning.sparse_state(pruned)
    restored = pruning.dense_state(sparse)
    assert all(torch.equal(restored[k], v) for k, v in pruned.state_dict().items())
    assert measure.state_dict_bytes(sparse) < 0.4 * measure.state_dict_bytes(pruned.state_dict())


def test_pruning_nothing_leaves_outputs_identical(model_and_scores):
    model, s = model_and_scores
    x = torch.randn(4, 3, 32, 32)
    same = pruning.prune_filters(model, s["filter"], pruning.kept_filters(model))
    assert torch.equal(same(x), model(x))
    assert torch.equal(pruning.unstructured_prune(model, s, 0.0)(x), model(x))


@pytest.mark.parametrize("criterion", ["weight", "lrp"])
def test_planted_dead_filters_are_exactly_the_ones_removed(criterion):
    model = _vgg(0.125)
    dead = {"features.3": [0, 5], "features.24": [1, 2, 7], "classifier.0": [3]}
    modules = dict(model.named_modules())
    for m in modules.values():  # every other unit fires, so only the planted ones score 0
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data.fill_(1.0)
    x = data.normalize(_ref().x)  # standardised channels: BN(conv) ~ N(1, gamma^2)
    pruning.recalibrate_batchnorm(model, [(x, None)], n_batches=1)
    with torch.no_grad():  # hidden units centred on +1 over the reference data
        h = model.avgpool(model.features(x)).flatten(1)
        modules["classifier.0"].bias.data += 1 - modules["classifier.0"](h).mean(0)
    for name, idx in dead.items():
        m = modules[name]
        m.weight.data[idx] = 0
        m.bias.data[idx] = 0
        if name.startswith("features"):  # the BatchNorm after it outputs zero too
            bn = modules[f"features.{int(name.split('.')[1]) + 1}"]
            bn.weight.data[idx] = 0
            bn.bias.data[idx] = 0
    s = criteria.compute_scores(model, _ref(), criterion)
    counts = {n: modules[n].weight.shape[0] - len(dead.get(n, [])) for n in s["filter"]}
    pruned = pruning.prune_filters(model, s["filter"], counts)
    assert pruning.kept_filters(pruned) == counts
    for name, idx in dead.items():  # the survivors are exactly the live filters
        live = [i for i in range(modules[name].weight.shape[0]) if i not in idx]
        torch.testing.assert_close(dict(pruned.named_modules())[name].weight, modules[name].weight[live])
    _same(model, pruned, torch.randn(4, 3, 32, 32))


def test_requested_counts_are_achieved_exactly(model_and_scores):
    model, s = model_and_scores
    layers = criteria.filter_layers(model).items()
    counts = {n: max(1, m.weight.shape[0] // (i % 3 + 2)) for i, (n, m) in enumerate(layers)}
    pruned = pruning.prune_filters(model, s["filter"], counts)
    assert pruning.kept_filters(pruned) == counts
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert measure.parameters(pruned) < measure.parameters(model)


def test_filter_pruning_frees_the_unpruned_weights_without_waiting_for_the_cycle_collector(
        model_and_scores, monkeypatch):
    """Torch-Pruning's dependency graph keeps the autograd trace of its example forward pass on
    nodes that refer to each other, and the trace holds the copy's unpruned weights. With the
    cycle collector off, none of them may outlive ``prune_filters`` (0.4 GB for the paper
    profile's first classifier layer)."""
    model, s = model_and_scores
    copies, deepcopy = [], copy.deepcopy

    def watched(m, *a):
        c = deepcopy(m, *a)
        if isinstance(c, nn.Module):
            copies.extend(weakref.ref(p) for p in c.parameters())
        return c

    counts = {n: max(1, m.weight.shape[0] // 2) for n, m in criteria.filter_layers(model).items()}
    gc.collect()
    gc.disable()
    try:
        monkeypatch.setattr(pruning.copy, "deepcopy", watched)
        pruned = pruning.prune_filters(model, s["filter"], counts)
        monkeypatch.undo()
        own = {id(p) for p in pruned.parameters()}
        alive = [r() for r in copies if r() is not None and id(r()) not in own]
    finally:
        gc.enable()
    assert copies and pruning.kept_filters(pruned) == counts
    assert not alive, f"{len(alive)} of the copy's {len(copies)} unpruned parameters still held"


def test_allocations(model_and_scores):
    model, s = model_and_scores
    uniform = pruning.keep_counts(model, pruning.uniform_allocation(model, 0.5))
    assert all(k == round(m.weight.shape[0] / 2) for k, m in
               zip(uniform.values(), criteria.filter_layers(model).values()))
    glob = pruning.global_counts(model, s["filter"], 0.5)
    total = sum(pruning.kept_filters(model).values())
    assert abs(sum(glob.values()) - total / 2) <= len(glob)  # at-least-one clamp only
    ratios = pruning.report_allocation(model, s, 0.8, margin=0.01)
    prof = pruning.sparsity_profile(pruning.unstructured_prune(model, s, 0.8))
    assert all(ratios[n] == pytest.approx(min(max(prof[n] - 0.01, 0), 0.99)) for n in ratios)


def test_reload_from_spec_gives_identical_outputs(model_and_scores, tmp_path, smoke):
    model, s = model_and_scores
    pruned = pruning.prune_filters(model, s["filter"], pruning.global_counts(model, s["filter"], 0.6))
    spec = models.spec_of(pruned, "vgg16_bn")
    training.save_model(pruned, spec, tmp_path / "p.pt", smoke)
    again, obj = training.load_model(tmp_path / "p.pt")  # no Torch-Pruning, no pickled modules
    assert obj["spec"]["cfg"] != models.vgg16_bn_spec(0.0625)["cfg"]
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(pruned(x), again.eval()(x))


def test_torchvision_vgg16_report_pipeline():
    torch.manual_seed(0)
    spec = {**models.vgg16_spec(), "cfg": [8, 8, "M", 16, 16, "M", 16, 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "M"],
            "hidden": [64, 64]}
    model = models.build_model(spec).eval()
    s = criteria.compute_scores(model, _ref(4), "weight", size=64)
    counts = pruning.keep_counts(model, pruning.report_allocation(model, s, 0.8))
    pruned = pruning.prune_filters(model, s["filter"], counts, input_size=64)
    assert pruning.kept_filters(pruned) == counts
    assert pruned(torch.randn(2, 3, 64, 64)).shape == (2, 100)
    assert pruned.classifier[0].in_features == counts["features.28"] * 49  # 7x7 pooled flatten


def test_batchnorm_recalibration_changes_only_statistics(model_and_scores):
    model, s = model_and_scores
    pruned = pruning.prune_filters(model, s["filter"], pruning.global_counts(model, s["filter"], 0.5))
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    it = ((torch.randn(8, 3, 32, 32), None) for _ in range(3))
    pruning.recalibrate_batchnorm(pruned, it, n_batches=3)
    after = pruned.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert not pruned.training


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "0.5"])
def test_bad_fractions_are_named(model_and_scores, bad):
    model, s = model_and_scores
    with pytest.raises(pruning.PruningError, match="sparsity must be a number in \\[0, 1\\)"):
        pruning.unstructured_prune(model, s, bad)
    with pytest.raises(pruning.PruningError, match="ratio must be a number in \\[0, 1\\)"):
        pruning.uniform_allocation(model, bad)


def test_bad_counts_and_foreign_scores_are_named(model_and_scores):
    model, s = model_and_scores
    with pytest.raises(pruning.PruningError, match="layer features.0 has 4 filters; cannot keep 0"):
        pruning.prune_filters(model, s["filter"], {"features.0": 0})
    other = criteria.compute_scores(_vgg(0.125), _ref(), "weight")
    with pytest.raises(criteria.ScoreError, match="belong to another model"):
        pruning.prune_filters(model, other["filter"], {})
    with pytest.raises(criteria.ScoreError, match="another model"):
        pruning.unstructured_prune(model, other, 0.5)


@pytest.mark.slow
def test_half_flops_models_and_side_by_side_benchmark():
    from helpers.studies import benchmark
    model = _vgg(0.25)
    half = benchmark.half_flops_models(model, criteria.weight_magnitude(model)["filter"], 32)
    plain, aligned = half.values()
    assert all(k % 16 == 0 for k in pruning.kept_filters(aligned).values())
    ratios = {n: measure.flops(model) / measure.flops(m) for n, m in half.items()}
    assert all(1.9 < r < 2.1 for r in ratios.values())  # "about half the FLOPs"
    assert 0.28 < pruning.filters_removed(model, pruning.kept_filters(plain)) < 0.30
    bench = benchmark.speed_benchmark(model, half, 32, label="w0.25")
    assert len(bench) == 2 * len(half) * len(benchmark.FORMS) and (bench["model"] == "w0.25").all()
    assert bench["flops_ratio"].tolist() == pytest.approx(bench["pruned"].map(ratios).tolist())
    assert bench["filters_removed"].tolist() == pytest.approx(
        bench["pruned"].map(lambda n: pruning.filters_removed(model, pruning.kept_filters(half[n]))).tolist())
    assert (bench["baseline_ms"] > 0).all() and (bench["pruned_ms"] > 0).all()
    assert bench["speedup"].tolist() == pytest.approx((bench["baseline_ms"] / bench["pruned_ms"]).tolist())
    # one baseline per form and batch: every pruned model is compared with the same timing
    assert bench.groupby(["form", "batch"])["baseline_ms"].nunique().eq(1).all()


def test_keep_counts_round_to():
    model = _vgg(0.25)  # 16, 32, 64 and 128 filters
    counts = pruning.keep_counts(model, pruning.uniform_allocation(model, 0.29), round_to=16)
    widths = pruning.kept_filters(model)
    assert all(k % 16 == 0 and 16 <= k <= widths[n] for n, k in counts.items())
    assert {counts[n] for n in widths if widths[n] == 128} == {96}  # 90.9 -> 96
    assert pruning.keep_counts(model, {}, round_to=64) == widths  # 16 and 32 keep all: never above the width
    with pytest.raises(pruning.PruningError, match="round_to"):
        pruning.keep_counts(model, {}, round_to=0)


def test_fold_batchnorm_keeps_outputs_and_drops_batchnorm():
    model = _vgg(0.25)
    for m in model.modules():  # non-trivial statistics, so folding has something to fold
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    folded = measure.fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    _same(model, folded, torch.randn(2, 3, 32, 32))


def test_latency_side_by_side_times_every_model():
    a, b = _vgg(), _vgg()
    t = measure.latency_side_by_side({"a": a, "b": b}, batch=2, repeats=3, warmup=1)
    assert set(t) == {"a", "b"} and all(v > 0 for v in t.values())


class _Counted(nn.Module):
    """Counts its forward passes, each taking ``seconds``."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.calls, self.w = seconds, 0, nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.calls += 1
        time.sleep(self.seconds)
        return x


@pytest.mark.parametrize("seconds, budget, calls", [
    (0.0, 30.0, 2 + 10),   # fits: every warm-up and timed round
    (0.05, 0.2, 1 + 3),    # does not fit: the first round is the only warm-up, then MIN_ROUNDS timed
    (0.05, 0.35, range(1 + 4, 1 + 8)),  # partly: as many timed rounds as fit (about 7: sleep overshoots)
])
def test_latency_rounds_are_cut_to_the_time_budget_never_below_three(monkeypatch, seconds, budget, calls):
    m = _Counted(seconds)
    monkeypatch.setattr(measure, "cpu_copy", lambda model: model)  # count the calls on this very module
    measure.latency_side_by_side({"m": m}, batch=1, input_size=2, repeats=10, warmup=2, budget_s=budget)
    assert m.calls in calls if isinstance(calls, range) else m.calls == calls


def test_latency_pairs_time_all_models_in_the_same_interleaved_rounds(monkeypatch):
    calls = []
    monkeypatch.setattr(measure, "latency_side_by_side",
                        lambda models, batch, size, repeats, budget_s: calls.append((sorted(models), batch, budget_s))
                        or {n: 0.001 * batch for n in models})
    got = measure.latency_pairs({"a": None, "b": None})
    budget = measure.LATENCY_BUDGET_S
    assert calls == [(["a", "b"], 1, budget), (["a", "b"], 256, budget)]  # one call per batch size, every model in it
    measure.latency_pairs({"a": None}, budget_s=2.0)
    assert [c[2] for c in calls[2:]] == [2.0, 2.0]  # a profile's latency_budget_s reaches both measurements
    assert got["a"] == {"latency_b1_ms": 1.0, "latency_b256_ms": 256.0} and set(got) == {"a", "b"}


def test_speed_benchmark_command_prints_the_table_and_the_verdict(capsys):
    from helpers.studies import benchmark
    bench = benchmark.main(["--width", "0.0625"])
    out = capsys.readouterr().out
    assert "speedup_over_flops_ratio" in out and "Target met at both batch sizes by" in out
    assert (bench["model"] == "VGG-16-BN width 0.0625 (untrained)").all() and len(bench) == 8
    with pytest.raises(SystemExit):
        benchmark.main(["--width", "0"])
    assert "need 0 < --width <= 4" in capsys.readouterr().err


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.8, 0.95])
def test_threshold_pruning_removes_what_torch_prune_global_unstructured_removes(model_and_scores, sparsity):
    """The memory-light masks against the library: the same weights removed, exactly (these
    scores have no ties), and the per-layer sparsity read without building the model."""
    model, s = model_and_scores
    reference = copy.deepcopy(model)
    layers = criteria.weight_layers(reference)
    total = sum(m.weight.numel() for m in layers.values())
    prune.global_unstructured([(m, "weight") for m in layers.values()], pruning_method=prune.L1Unstructured,
                              importance_scores={(m, "weight"): s["weight"][n].float() for n, m in layers.items()},
                              amount=round(sparsity * total))
    masks = pruning.unstructured_masks(model, s, sparsity)
    assert all(torch.equal(masks[n], m.weight_mask.bool()) for n, m in layers.items())
    pruned = pruning.unstructured_prune(model, s, sparsity)
    assert all(torch.equal(m.weight, r.weight) for m, r in zip(criteria.weight_layers(pruned).values(),
                                                              layers.values()))
    masked = pruning.unstructured_prune(model, s, sparsity, permanent=False)
    assert all(torch.equal(m.weight_mask.bool(), masks[n]) for n, m in criteria.weight_layers(masked).items())
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    light = pruning.global_layer_sparsity(model, s, sparsity)
    assert {n: round(v * sizes[n]) for n, v in light.items()} == {n: int((~k).sum()) for n, k in masks.items()}


def test_kth_smallest_against_a_sort_with_ties():
    g = torch.Generator().manual_seed(0)
    values = [torch.randint(0, 1 << 20, (n,), generator=g, dtype=torch.int32) for n in (50, 3000, 7)]
    values.append(torch.full((40,), 123_456, dtype=torch.int32))  # a block of ties
    every = torch.sort(torch.cat(values)).values
    for k in (1, 2, 500, 1700, len(every)):
        assert pruning._kth_smallest(values, k) == int(every[k - 1])
    assert pruning._kth_smallest(values, 0) == -1


def test_ties_at_the_threshold_are_drawn_at_random_with_a_fixed_seed():
    model = nn.Sequential(nn.Conv2d(3, 100, 1), nn.Flatten(), nn.Linear(2, 100))
    scores = {"weight": {"0": torch.zeros(100, 3, 1, 1), "2": torch.zeros(100, 2)}}  # 500 equal scores
    scores["weight"]["0"][0] = 1.0  # three weights score higher: kept at any sparsity below 0.994
    masks = pruning.unstructured_masks(model, scores, 0.5)
    assert sum(int((~m).sum()) for m in masks.values()) == 250 and masks["0"][0].all()
    removed = {n: 1 - float(m.float().mean()) for n, m in masks.items()}
    assert 0.35 < removed["0"] < 0.65 and 0.35 < removed["2"] < 0.65  # neither layer first
    again = pruning.unstructured_masks(model, scores, 0.5)
    assert all(torch.equal(masks[n], again[n]) for n in masks)  # the same draw every time
    assert pruning.global_layer_sparsity(model, scores, 0.5) == pytest.approx(removed)
    assert scores["weight"]["0"].max() == 1  # the caller's scores are untouched


def test_the_highest_scored_filters_are_the_ones_kept(model_and_scores):
    """Each conv keeps exactly its top-``k`` filters by score (and the input channels its
    predecessor kept), weights copied unchanged: an independent re-slicing of the original."""
    model, s = model_and_scores
    counts = pruning.global_counts(model, s["filter"], 0.5)
    pruned = pruning.prune_filters(model, s["filter"], counts)
    before = {n: m for n, m in criteria.filter_layers(model).items() if isinstance(m, nn.Conv2d)}
    after = criteria.filter_layers(pruned)
    previous = torch.arange(3)
    for n, conv in before.items():
        keep = torch.sort(torch.argsort(s["filter"][n], descending=True, stable=True)[:counts[n]]).values
        assert torch.equal(after[n].weight, conv.weight[keep][:, previous]), n
        assert torch.equal(after[n].bias, conv.bias[keep]), n
        previous = keep


def test_training_benchmark_times_both_layouts_for_both_losses(capsys):
    from helpers.studies import benchmark
    bench = benchmark.main(["--training", "--width", "0.0625", "--batch", "16"])
    assert list(bench["loss"]) == ["labels", "distillation"] and list(bench["batch"]) == [16, 16]
    assert (bench[["contiguous_s", "channels_last_s"]] > 0).all().all()
    assert bench["speedup"].round(6).equals((bench["contiguous_s"] / bench["channels_last_s"]).round(6))
    assert "channels_last_img_per_s" in capsys.readouterr().out


def test_reference_step_times_the_profiles_own_training_step():
    from helpers.studies import benchmark
    threads = torch.get_num_threads()
    p = config.get_profile("smoke", batch_size=8)
    assert benchmark.reference_step_seconds(p, rounds=2, steps=1) > 0
    assert torch.get_num_threads() == threads


@pytest.mark.skipif(not (config.get_profile("cpu").figures / "baseline_model.pt").exists(),
                    reason="the cpu profile ships no baseline")
@pytest.mark.parametrize("criterion", ["lrp", "taylor"])
def test_float32_weight_scores_change_no_ranking_on_the_cpu_model(criterion, monkeypatch):
    """Weight scores kept in float32 (criteria.WEIGHT_DTYPE) against the same scores kept in
    float64, on the shipped cpu baseline: the same weights are removed at every sparsity, and
    the same filters (filter scores stay float64)."""
    model, _ = training.load_model(config.get_profile("cpu").figures / "baseline_model.pt")
    g = torch.Generator().manual_seed(0)
    ref = Split(torch.randint(0, 256, (100, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(100))
    kept = criteria.compute_scores(model, ref, criterion)
    monkeypatch.setattr(criteria, "WEIGHT_DTYPE", torch.float64)
    wide = criteria.compute_scores(model, ref, criterion)
    assert {s.dtype for s in kept["weight"].values()} == {torch.float32}
    assert {s.dtype for s in wide["weight"].values()} == {torch.float64}
    for sparsity in (0.3, 0.8, 0.95):
        a, b = pruning.unstructured_masks(model, kept, sparsity), pruning.unstructured_masks(model, wide, sparsity)
        assert all(torch.equal(a[n], b[n]) for n in a)
    assert pruning.global_counts(model, kept["filter"], 0.4) == pruning.global_counts(model, wide["filter"], 0.4)
