import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat, LayerMapComposite, layer_map_base
from zennit.rules import Epsilon
from zennit.types import Convolution

from helpers.core import data, models
from helpers.methods import composites, criteria
from helpers.core.data import Split


def _ref(n_per_class=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(100).repeat_interleave(n_per_class)
    return Split(torch.randint(0, 256, (len(y), 3, 32, 32), generator=g, dtype=torch.uint8), y)


def _vgg(width=0.0625, seed=0):
    torch.manual_seed(seed)
    model = models.build_model(models.vgg16_bn_spec(width))
    for m in model.modules():  # non-trivial BatchNorm statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


class Tiny(nn.Module):
    """conv-relu-pool-conv-relu-flatten-linear-relu-linear, bias-free, float64."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1, bias=False),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(20, 6, bias=False), nn.ReLU(),
                                        nn.Linear(6, 100, bias=False))

    def forward(self, x):
        return self.classifier(self.features(x))


def _tiny():
    torch.manual_seed(0)
    model = Tiny().double().eval()
    for p in model.parameters():  # pre-activations far above the 1e-6 stabiliser
        p.data *= 4
    return model


def test_conservation_on_a_bias_free_model():
    """z+ (convs) and epsilon (dense) conserve relevance layer by layer: every layer's summed
    filter relevance, and every layer's summed weight relevance, equal the relevance put in
    at the output (the true-class logits), up to the epsilon term."""
    model, ref = _tiny(), _ref(1)
    # AdaptiveAvgPool is a linear Sum/Norm layer in zennit: conserving too
    s = criteria.compute_scores(model, ref, "lrp", normalize=False, absolute=False)
    x = data.normalize(ref.x).double()
    total = model(x).gather(1, ref.y[:, None]).sum().item()
    for name, r in s["filter"].items():
        assert r.sum().item() == pytest.approx(total, rel=1e-5), name
    for name, r in s["weight"].items():
        assert r.sum().item() == pytest.approx(total, rel=1e-5), name


REFERENCE_COMPOSITES = {  # zennit's own composites, as shipped
    "epsilon_plus_flat": lambda low, high: EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]),
    "epsilon_gamma_box": lambda low, high: EpsilonGammaBox(low=low, high=high,
                                                           canonizers=[SequentialMergeBatchNorm()]),
    "epsilon_alpha2_beta1": lambda low, high: EpsilonAlpha2Beta1(canonizers=[SequentialMergeBatchNorm()]),
    "epsilon": lambda low, high: LayerMapComposite(
        layer_map_base() + [(Convolution, Epsilon()), (nn.Linear, Epsilon())], canonizers=[SequentialMergeBatchNorm()]),
}


def _reference_filter_relevance(model, ref, composite):
    """Independent computation: zennit's stock composite, retain_grad on every conv output."""
    outputs = {}

    def keep(name):
        def hook(module, inp, out):
            out.retain_grad()
            outputs[name] = out
        return hook
    layers = criteria.filter_layers(model)
    sums = {n: 0 for n in layers}
    dtype = next(model.parameters()).dtype
    with criteria.no_inplace(model):
        handles = [m.register_forward_hook(keep(n)) for n, m in layers.items()]
        low, high = (t.to(dtype) for t in criteria._input_box(32))
        with Gradient(model, REFERENCE_COMPOSITES[composite](low, high)):
            for x, y in data.batches(ref, 50):
                x = x.to(dtype).requires_grad_(True)
                out = model(x)
                out.backward(F.one_hot(y, 100).to(out) * out)
                for n, o in outputs.items():
                    sums[n] = sums[n] + o.grad.sum(dim=(0, *range(2, o.ndim))).double()
        for h in handles:
            h.remove()
    return sums


# float32: the same up to rounding, except alpha-beta, whose faster form (W- = W - W+) loses
# digits where a neuron's negative input is near zero (see composites.AlphaBetaNonNegative)
TOLERANCE = {torch.float64: {c: 1e-9 for c in composites.COMPOSITES},
             torch.float32: {**{c: 1e-4 for c in composites.COMPOSITES}, "epsilon_alpha2_beta1": 1e-2}}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("composite", list(composites.COMPOSITES))
def test_filter_relevance_agrees_with_independent_computation(composite, dtype):
    model, ref = _vgg().to(dtype), _ref(1)
    s = criteria.compute_scores(model, ref, "lrp", composite=composite, normalize=False, absolute=False)
    expected = _reference_filter_relevance(model, ref, composite)
    for n in expected:
        torch.testing.assert_close(s["filter"][n], expected[n], rtol=TOLERANCE[dtype][composite], atol=1e-6)


@pytest.mark.parametrize("composite", list(composites.COMPOSITES))
def test_input_heatmaps_equal_zennit_stock_composites(composite):
    """Heatmaps run every layer's rule, the first one's included: equal to zennit's own (float64)."""
    model, ref = _vgg().double(), _ref(1)
    x, y = data.normalize(ref.x[:10]).double(), ref.y[:10]
    ours = criteria.lrp_heatmaps(model, x, y, composite)
    low, high = (t.double() for t in criteria._input_box(32))
    with criteria.no_inplace(model), Gradient(model, REFERENCE_COMPOSITES[composite](low, high)) as attr:
        _, rel = attr(x.clone(), lambda o: F.one_hot(y, 100).to(o) * o)
    torch.testing.assert_close(ours, rel.sum(1), rtol=1e-9, atol=1e-12)


def test_non_negative_rules_refuse_negative_inputs():
    conv = nn.Conv2d(3, 4, 3).eval()
    composite = LayerMapComposite([(Convolution, composites.GammaNonNegative())])
    with composite.context(conv) as hooked, pytest.raises(composites.CompositeError, match="non-negative"):
        hooked(torch.randn(2, 3, 8, 8, requires_grad=True))


def test_weight_relevance_equals_brute_force_loop():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    a = torch.rand(2, 2, 5, 5, dtype=torch.float64)
    z = conv(a).detach()
    r = torch.randn_like(z)
    got = criteria.weight_relevance(conv, a, z, r, "epsilon")
    want = torch.zeros_like(conv.weight)
    ap = F.pad(a, (1, 1, 1, 1))
    for o in range(3):
        for i in range(2):
            for kh in range(3):
                for kw in range(3):
                    for n in range(2):
                        for py in range(z.shape[2]):
                            for px in range(z.shape[3]):
                                zz = z[n, o, py, px]
                                want[o, i, kh, kw] += (conv.weight[o, i, kh, kw] * ap[n, i, 2 * py + kh, 2 * px + kw]
                                                       * r[n, o, py, px] / (zz + 1e-6 * (1 if zz >= 0 else -1)))
    torch.testing.assert_close(got, want.detach())


def test_weight_relevance_zplus_gives_negative_weights_nothing():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3).double()
    a = torch.rand(5, 4, dtype=torch.float64)
    r = torch.rand(5, 3, dtype=torch.float64)
    rw = criteria.weight_relevance(lin, a, lin(a).detach(), r, "zplus")
    assert torch.all(rw[lin.weight < 0] == 0) and torch.all(rw[lin.weight > 0] > 0)


def test_weight_filter_scores_rank_like_torch_pruning_l1():
    import torch_pruning as tp
    model = _vgg()
    s = criteria.compute_scores(model, _ref(1), "weight")
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 32, 32))
    imp = tp.importance.MagnitudeImportance(p=1, group_reduction="first", normalizer=None)
    for name in ["features.0", "features.10", "features.40"]:
        conv = dict(model.named_modules())[name]
        group = dg.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
        assert torch.equal(torch.argsort(imp(group), stable=True),
                           torch.argsort(s["filter"][name].float(), stable=True))


def _permute_filters(model, conv_idx, perm):
    """Permute the filters of features[conv_idx] (and its BatchNorm, and the next conv's inputs)."""
    f = model.features
    conv, bn = f[conv_idx], f[conv_idx + 1]
    conv.weight.data = conv.weight.data[perm]
    conv.bias.data = conv.bias.data[perm]
    for t in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn, t).data = getattr(bn, t).data[perm]
    nxt = next(m for m in list(f)[conv_idx + 2:] if isinstance(m, nn.Conv2d))
    nxt.weight.data = nxt.weight.data[:, perm]


@pytest.mark.parametrize("criterion", ["lrp", "weight", "gradient", "taylor"])
def test_permuting_filters_permutes_scores(criterion):
    model, ref = _vgg(), _ref(1)
    before = criteria.compute_scores(model, ref, criterion)
    x = data.normalize(ref.x[:8])
    out = model(x)
    perm = torch.randperm(model.features[7].out_channels, generator=torch.Generator().manual_seed(1))
    _permute_filters(model, 7, perm)
    torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)
    after = criteria.compute_scores(model, ref, criterion)
    torch.testing.assert_close(after["filter"]["features.7"], before["filter"]["features.7"][perm],
                               rtol=1e-3, atol=1e-8)
    torch.testing.assert_close(after["weight"]["features.7"], before["weight"]["features.7"][perm],
                               rtol=1e-3, atol=1e-8)


@pytest.mark.parametrize("criterion", list(criteria.CRITERIA))
def test_one_finite_entry_per_filter_and_weight_and_seeded(criterion):
    model, ref = _vgg(), _ref(1)
    s = criteria.compute_scores(model, ref, criterion, seed=3)
    criteria.check_scores(model, s, "filter")
    criteria.check_scores(model, s, "weight")
    assert "classifier.2" not in s["filter"] and "classifier.2" in s["weight"]
    again = criteria.compute_scores(model, ref, criterion, seed=3)
    for kind in ("filter", "weight"):
        for n in s[kind]:
            assert torch.isfinite(s[kind][n]).all()
            assert torch.equal(s[kind][n], again[kind][n])
    for r in s["filter"].values():  # layer-normalised: each layer sums to 1 in magnitude
        assert r.abs().sum().item() == pytest.approx(1.0)


def test_in_place_relu_is_restored_and_harmless():
    model, ref = _vgg(), _ref(1)
    assert any(getattr(m, "inplace", False) for m in model.modules())
    criteria.compute_scores(model, ref, "lrp")
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_torchvision_vgg16_scores():
    torch.manual_seed(0)
    model = models.build_model({**models.vgg16_spec(), "cfg": [4, "M", 4, "M", 8, "M", 8, "M", 8, "M"],
                                "hidden": [16, 16]}).eval()
    s = criteria.compute_scores(model, _ref(1), "lrp")
    assert set(s["filter"]) == {"features.0", "features.3", "features.6", "features.9",
                                "features.12", "classifier.0", "classifier.3"}


def test_bad_input_is_named():
    model, ref = _vgg(), _ref(1)
    with pytest.raises(criteria.ScoreError, match="valid: lrp, weight, gradient, taylor, random"):
        criteria.compute_scores(model, ref, "saliency")
    with pytest.raises(criteria.ScoreError, match="valid: epsilon_plus_flat, epsilon_gamma_box"):
        criteria.compute_scores(model, ref, "lrp", composite="zplus")
    bad = Split(ref.x[:2], torch.tensor([0, 100]))
    with pytest.raises(criteria.ScoreError, match="labels must lie in 0..99"):
        criteria.compute_scores(model, bad, "gradient")
    with pytest.raises(criteria.ScoreError, match="no Conv2d or Linear layer"):
        criteria.compute_scores(nn.Sequential(nn.ReLU()), ref, "weight")
    other = criteria.compute_scores(_vgg(0.125), ref, "weight")
    with pytest.raises(criteria.ScoreError, match="belong to another model"):
        criteria.check_scores(model, other)


@pytest.mark.parametrize("seconds, budget, rounds", [
    (1.0, 100.0, 5),   # fits: every timed round
    (10.0, 30.0, 3),   # does not fit: never below MIN_ROUNDS
    (1.0, 8.0, 4),     # partly: as many as fit (8 s at 2 s a round)
])
def test_score_benchmark_rounds_are_cut_to_the_time_budget(monkeypatch, seconds, budget, rounds):
    """The warm-up round sizes the timed rounds, as for latency (the paper model's LRP on a few
    hundred images takes seconds a call)."""
    from helpers.methods import scores
    calls = []
    monkeypatch.setattr(scores, "compute_scores", lambda model, ref, n, **k: calls.append(n) or {"seconds": seconds})
    table = scores.benchmark(None, [0] * 4, ("lrp", "gradient"), repeats=5, budget_s=budget)
    assert calls == ["lrp", "gradient"] * (1 + rounds)
    assert list(table["x_gradient"]) == [1.0, 1.0] and list(table["images"]) == [4, 4]
