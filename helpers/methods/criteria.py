"""Pruning scores for every filter and every weight: LRP (zennit) and the classic criteria.

All criteria return the same structure::

    {"filter": {layer: (C_out,) tensor}, "weight": {layer: tensor shaped like its weight}}

``filter`` covers every Conv2d and every hidden Linear (the final class layer is never
pruned structurally); ``weight`` covers every Conv2d and Linear weight. Higher = keep.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from zennit.attribution import Gradient

from ..core import memory, progress
from . import composites
from .composites import EPSILON, CompositeError
from ..core.data import MEAN, NUM_CLASSES, STD, Split, batches
from ..core.models import device_of
from ..core.vocabulary import EPSILON_PLUS_FLAT, GRADIENT, LRP, RANDOM, TAYLOR, WEIGHT

DATA_DRIVEN = (LRP, GRADIENT, TAYLOR)
"""The criteria that read reference images."""

WEIGHT_RULES = ("epsilon", "zplus")


class ScoreError(ValueError):
    """Scores that cannot be computed for, or applied to, a model."""


# ----------------------------------------------------------------------------- layers
def filter_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layers whose output channels can be removed: every Conv2d and every hidden Linear."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    linears = [n for n, m in layers.items() if isinstance(m, nn.Linear)]
    if linears:
        del layers[linears[-1]]  # the class layer keeps all its outputs
    return layers


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layers whose individual weights can be removed: every Conv2d and Linear."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def channel_outputs(model: nn.Module) -> dict[str, nn.Module]:
    """For each filter layer, the module whose output is that layer's channels as the next
    layer sees them: the BatchNorm right after a conv when there is one, else the layer."""
    names = dict(model.named_modules())
    out = {}
    for name, module in filter_layers(model).items():
        parent, _, idx = name.rpartition(".")
        seq = names.get(parent)
        nxt = seq[int(idx) + 1] if isinstance(seq, nn.Sequential) and idx.isdigit() \
            and int(idx) + 1 < len(seq) else None
        out[name] = nxt if isinstance(nxt, nn.BatchNorm2d) else module
    return out


@contextlib.contextmanager
def no_inplace(model: nn.Module):
    """Turn in-place ReLUs off while hooks read intermediate tensors; restore them after."""
    flipped = [m for m in model.modules() if getattr(m, "inplace", False)]
    for m in flipped:
        m.inplace = False
    try:
        yield model
    finally:
        for m in flipped:
            m.inplace = True


@contextlib.contextmanager
def output_hooks(modules: dict[str, nn.Module], on_output: Callable):
    """Call ``on_output(name, module, input, output)`` on each module's forward pass."""
    handles = [m.register_forward_hook(lambda mod, inp, out, n=n: on_output(n, mod, inp[0], out))
               for n, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# ----------------------------------------------------------------------------- LRP
def _stabilize(z: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    """z + eps * sign(z), never zero (as zennit's, except that -0.0 gets -eps)."""
    return torch.copysign(z.abs().add_(eps), z)


def weight_gradient(module: nn.Module, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """sum over images and positions of a[input] * s[output] for each weight: dz/dw^T s."""
    if isinstance(module, nn.Linear):
        return s.flatten(0, -2).T @ a.flatten(0, -2)
    return torch.nn.grad.conv2d_weight(a, module.weight.shape, s, module.stride, module.padding,
                                       module.dilation, module.groups)


def weight_relevance(module: nn.Module, a: torch.Tensor, z: torch.Tensor, r: torch.Tensor,
                     rule: str = "epsilon") -> torch.Tensor:
    """LRP decomposition of a layer's output relevance onto its weights, summed over images.

    epsilon: R_w = w * sum_{n,p} a_{n,p} R_{n,p} / (z_{n,p} + eps sign z)
    zplus:   R_w = w+ * sum_{n,p} a+_{n,p} R_{n,p} / (z+_{n,p} + eps),  z+ = layer(a+, w+)
    (Bach et al. 2015; Yeom et al. 2021, eq. for weight relevance). Shapes: a (N, C_in, ...),
    z and r (N, C_out, ...); returns a tensor shaped like the weight.
    """
    w = module.weight.detach()
    if rule == "epsilon":
        return weight_gradient(module, a, r / _stabilize(z)).mul_(w)
    a, wp = a.clamp(min=0), w.clamp(min=0)
    zp = F.linear(a, wp) if isinstance(module, nn.Linear) else F.conv2d(
        a, wp, None, module.stride, module.padding, module.dilation, module.groups)
    return weight_gradient(module, a, r / (zp + EPSILON)).mul_(wp)


def lrp(model: nn.Module, ref: Split, composite: str = EPSILON_PLUS_FLAT,
        weight_rule: str = "epsilon", batch_size: int = 100, size: int = 32) -> dict:
    """Filter and weight relevance, starting from the true-class logit of each image.

    Scores are read at layer outputs, so relevance is propagated down to the first layer's
    output and no further: its output is made the leaf the gradient is taken for, and the
    first layer's own rule (which only shapes input heatmaps, see :func:`lrp_heatmaps`) is
    never evaluated."""
    _check_composite(composite)
    if weight_rule not in WEIGHT_RULES:
        raise ScoreError(f"unknown weight_rule {weight_rule!r}; valid: {', '.join(WEIGHT_RULES)}")
    filt, wlayers = filter_layers(model), weight_layers(model)
    scores, leaves = _zeros(model), []

    def record(name, module, a, z):
        a, zd = a.detach(), z.detach()

        def on_relevance(r):
            if name in filt:
                scores["filter"][name] += r.sum(dim=(0, *range(2, r.ndim))).double()
            scores["weight"][name].add_(weight_relevance(module, a, zd, r, weight_rule))  # summed in float64
        z.register_hook(on_relevance)

    def leaf(module, inp, out):
        leaves.append(out.detach().requires_grad_())
        return leaves[-1]

    first = next(iter(wlayers.values()))
    with no_inplace(model), _hooked(first.register_forward_hook(leaf)), output_hooks(wlayers, record), \
            composites.make(composite, model, *_input_box(size, device_of(model))).context(model) as hooked:
        for x, y in _ref_batches(ref, batch_size, size, model):
            out = hooked(x)
            torch.autograd.grad(out, leaves.pop(), F.one_hot(y, out.shape[1]).to(out) * out.detach())
    return scores


@contextlib.contextmanager
def _hooked(handle):
    """Remove a hook handle on exit."""
    try:
        yield handle
    finally:
        handle.remove()


def lrp_heatmaps(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 composite: str = EPSILON_PLUS_FLAT) -> torch.Tensor:
    """Input relevance (N, H, W) on the CPU, summed over colour channels, for normalised images
    x (computed on the model's device)."""
    dev = device_of(model)
    low, high = _input_box(x.shape[-1], dev)
    x, y = x.to(dev), y.to(dev)
    model.eval()
    _check_composite(composite)
    with no_inplace(model), Gradient(model, composites.make(composite, model, low, high)) as attributor:
        out, rel = attributor(x.clone(), lambda o: F.one_hot(y, o.shape[1]).to(o) * o)
    return rel.sum(1).detach().cpu()


def _check_composite(name: str) -> None:
    try:
        composites.check(name)
    except CompositeError as e:
        raise ScoreError(str(e)) from None


def _input_box(size: int, device: torch.device | str = "cpu"):
    """Lowest and highest normalised pixel values, shape (1, 3, size, size) (for ZBox)."""
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return ((0 - mean) / std).expand(1, 3, size, size), ((1 - mean) / std).expand(1, 3, size, size)



# ----------------------------------------------------------------------------- classic
def weight_magnitude(model: nn.Module, ref: Split | None = None, **_) -> dict:
    """|w| per weight; L1 norm per filter (Li et al. 2017; what the original report used)."""
    weights = {n: m.weight.detach().abs() for n, m in weight_layers(model).items()}
    return {"filter": {n: weights[n].flatten(1).double().sum(1) for n in filter_layers(model)},
            "weight": weights}


def gradient(model: nn.Module, ref: Split, batch_size: int = 100, size: int = 32, **_) -> dict:
    """|dL/dw| accumulated over the reference data; per filter the L2 norm of its gradient."""
    scores = _zeros(model)
    layers = weight_layers(model)
    for x, y in _ref_batches(ref, batch_size, size, model):
        grads = _loss_gradients(model, x, y, layers)
        for n, g in grads.items():
            scores["weight"][n].add_(g.abs())  # summed in float64
    for n in filter_layers(model):
        scores["filter"][n] = scores["weight"][n].flatten(1).norm(dim=1)
    return scores


def taylor(model: nn.Module, ref: Split, batch_size: int = 100, size: int = 32, **_) -> dict:
    """First-order Taylor (Molchanov et al. 2017, 2019): |w dL/dw| per weight (per batch,
    summed); per filter sum over images of |sum over positions of a dL/da| of its channel."""
    scores = _zeros(model)
    layers, outs = weight_layers(model), channel_outputs(model)
    by_module = {id(m): n for n, m in outs.items()}

    def record(_, module, __, a):
        name, ad = by_module[id(module)], a.detach()

        def on_gradient(g):
            scores["filter"][name] += (ad * g).sum(dim=tuple(range(2, g.ndim))).abs().sum(0).double()
        a.register_hook(on_gradient)

    with no_inplace(model), output_hooks({n: m for n, m in outs.items()}, record):
        for x, y in _ref_batches(ref, batch_size, size, model):
            grads = _loss_gradients(model, x, y, layers)
            for n, g in grads.items():
                scores["weight"][n].add_(torch.mul(layers[n].weight.detach(), g).abs_())  # summed in float64
    return scores


def random(model: nn.Module, ref: Split | None = None, seed: int = 0, **_) -> dict:
    """Seeded uniform scores: the control."""
    g = torch.Generator().manual_seed(seed)
    return {"filter": {n: torch.rand(m.weight.shape[0], generator=g, dtype=torch.float64)
                       for n, m in filter_layers(model).items()},
            "weight": {n: torch.rand(m.weight.shape, generator=g, dtype=torch.float64)
                       for n, m in weight_layers(model).items()}}


def _loss_gradients(model, x, y, layers) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y, reduction="sum").backward()
    return {n: m.weight.grad.detach() for n, m in layers.items()}


def _zeros(model: nn.Module) -> dict:
    """float64 accumulators on the model's device (moved to the CPU by :func:`compute_scores`)."""
    kw = dict(dtype=torch.float64, device=device_of(model))
    return {"filter": {n: torch.zeros(m.weight.shape[0], **kw) for n, m in filter_layers(model).items()},
            "weight": {n: torch.zeros(m.weight.shape, **kw) for n, m in weight_layers(model).items()}}


def _ref_batches(ref: Split, batch_size: int, size: int, model: nn.Module):
    """Reference batches on the model's device, in its dtype (no criterion needs input gradients)."""
    first = next(model.parameters())
    for x, y in progress.bar(batches(ref, batch_size, size), total=-(-len(ref) // batch_size)):
        yield x.to(first.device, first.dtype), y.to(first.device)


# ----------------------------------------------------------------------------- interface
CRITERIA = {LRP: lrp, WEIGHT: weight_magnitude, GRADIENT: gradient, TAYLOR: taylor, RANDOM: random}


def compute_scores(model: nn.Module, ref: Split, criterion: str = LRP, *,
                   composite: str = EPSILON_PLUS_FLAT, weight_rule: str = "epsilon",
                   absolute: bool = True, normalize: bool = True, seed: int = 0,
                   batch_size: int = 100, size: int = 32) -> dict:
    """Scores of ``criterion`` for every filter and weight of ``model`` on reference data ``ref``,
    computed on the model's device and returned on the CPU.

    Parameters
    ----------
    ref : reference images (uint8, (N, 3, 32, 32)) and labels in 0..99.
    absolute : rank filters and weights by |score|. Matters for LRP only (the other criteria
        are non-negative): relevance can be negative (evidence against the true class, or a
        negative true-class logit), and a strongly negative filter or weight shapes the
        decision as much as a strongly positive one; a dead filter (relevance 0) ranks last.
    normalize : divide each layer's filter scores by their sum of magnitudes, so each layer
        sums to 1 (Yeom et al.) and layers can be ranked together.

    Returns
    -------
    dict with ``filter`` (float64) and ``weight`` (float32, :data:`WEIGHT_DTYPE`) score dicts and
    metadata, as saved to disk.
    """
    if criterion not in CRITERIA:
        raise ScoreError(f"unknown criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
    _check_reference(model, ref)
    start = time.perf_counter()
    scores = _raw(model, ref, criterion, composite, weight_rule, seed, batch_size, size)
    seconds = time.perf_counter() - start
    memory.trim()  # the pass freed gigabytes in mid-sized tensors (paper model): give them back, untimed
    scores = _finish(scores, absolute, normalize)
    return {"kind": "scores", "criterion": criterion,
            "composite": composite if criterion == LRP else "",
            "weight_rule": weight_rule if criterion == LRP else "",
            "absolute": absolute, "normalize": normalize, "seed": seed,
            "n_images": len(ref), "seconds": seconds, **scores}


def nested_scores(model: nn.Module, chunks: list[Split], criterion: str, *, composite: str = EPSILON_PLUS_FLAT,
                  weight_rule: str = "epsilon", seed: int = 0, batch_size: int = 100, size: int = 32) -> list[dict]:
    """Scores on growing reference sets: ``chunks[0]``, then ``chunks[0] + chunks[1]``, and so
    on, for the cost of one pass over all chunks. Every criterion sums over batches, so each
    chunk is scored once and the raw sums are accumulated (the gradient criterion's filter norm
    is taken of the accumulated weight scores, as :func:`gradient` does); chunk sizes that are
    multiples of ``batch_size`` give the same batches as scoring each set on its own."""
    if criterion not in DATA_DRIVEN:
        raise ScoreError(f"nested_scores takes a data-driven criterion (lrp, gradient, taylor), got {criterion!r}")
    total, out, seconds = None, [], 0.0
    for chunk in chunks:
        _check_reference(model, chunk)
        start = time.perf_counter()
        raw = _raw(model, chunk, criterion, composite, weight_rule, seed, batch_size, size)
        seconds += time.perf_counter() - start
        memory.trim()
        total = raw if total is None else {k: {n: total[k][n] + raw[k][n] for n in raw[k]} for k in raw}
        if criterion == GRADIENT:
            total["filter"] = {n: total["weight"][n].flatten(1).norm(dim=1) for n in filter_layers(model)}
        n_images = sum(len(c) for c in chunks[:len(out) + 1])
        out.append({"kind": "scores", "criterion": criterion, "composite": composite if criterion == LRP else "",
                    "seed": seed, "n_images": n_images, "seconds": seconds,
                    **_finish({k: dict(v) for k, v in total.items()}, True, True)})  # total keeps its sums
    return out


def _raw(model, ref, criterion, composite, weight_rule, seed, batch_size, size) -> dict:
    """Unprocessed scores of ``criterion`` on ``ref``, on the CPU (float64)."""
    model.eval()
    kwargs = dict(batch_size=batch_size, size=size)
    if criterion == LRP:
        kwargs.update(composite=composite, weight_rule=weight_rule)
    scores = CRITERIA[criterion](model, ref, seed=seed, **kwargs) if criterion == RANDOM \
        else CRITERIA[criterion](model, ref, **kwargs)
    model.zero_grad(set_to_none=True)
    return {kind: {n: s.cpu() for n, s in scores[kind].items()} for kind in ("filter", "weight")}


def _finish(scores: dict, absolute: bool, normalize: bool) -> dict:
    """|score| and per-layer normalisation as asked, checked finite; weight scores kept in
    float32, filter scores in float64 (see :data:`WEIGHT_DTYPE`). The weight scores are
    converted layer by layer in ``scores``' own dict (pass a copy of it to keep the float64
    sums), so that the float64 sums are freed as the float32 scores are made."""
    weight = scores["weight"]
    for n in list(weight):
        weight[n] = weight[n].to(WEIGHT_DTYPE, copy=True)  # |float32(s)| = float32(|s|): rounding is symmetric
        if absolute:
            weight[n].abs_()
    filt = {n: s.abs() for n, s in scores["filter"].items()} if absolute else scores["filter"]
    scores = {**scores, "filter": normalize_per_layer(filt) if normalize else filt}
    _check_finite(scores)
    return scores


WEIGHT_DTYPE = torch.float32
"""Weight scores are summed in float64 and kept in float32: weights are ranked by their float32
``|score|`` (:func:`helpers.methods.pruning.unstructured_masks`, as ``torch.nn.utils.prune`` does
in the weights' dtype), so float64 would change no ranking and cost twice the memory (1.08 GB
per score set for torchvision VGG-16 instead of 0.54). Filter scores, a few thousand, stay float64."""


def _check_reference(model: nn.Module, ref: Split) -> None:
    if not weight_layers(model):
        raise ScoreError("the model has no Conv2d or Linear layer to score")
    if len(ref) == 0 or ref.y.min() < 0 or ref.y.max() >= NUM_CLASSES:
        raise ScoreError(f"reference labels must lie in 0..{NUM_CLASSES - 1} and the reference "
                         f"set must not be empty (got {len(ref)} images)")


def normalize_per_layer(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each layer's scores divided by their sum of magnitudes (a zero layer stays zero)."""
    return {n: s / s.abs().sum() if s.abs().sum() > 0 else s for n, s in scores.items()}


def _check_finite(scores: dict) -> None:
    for kind in ("filter", "weight"):
        for n, s in scores[kind].items():
            if not torch.isfinite(s).all():
                raise ScoreError(f"{kind} scores of layer {n} contain NaN or inf")


def check_scores(model: nn.Module, scores: dict, kind: str = "filter") -> None:
    """Raise ``ScoreError`` unless ``scores[kind]`` has one entry per filter / weight of ``model``."""
    layers = filter_layers(model) if kind == "filter" else weight_layers(model)
    have = scores.get(kind, {})
    if set(have) != set(layers):
        raise ScoreError(f"the {scores.get('criterion', '?')} scores are for layers "
                         f"{sorted(have)[:3]}..., not this model's {sorted(layers)[:3]}...: "
                         "recompute them for this model")
    for n, m in layers.items():
        expected = (m.weight.shape[0],) if kind == "filter" else tuple(m.weight.shape)
        if tuple(have[n].shape) != expected:
            raise ScoreError(f"{kind} scores of layer {n} have shape {tuple(have[n].shape)}, but "
                             f"the model's layer needs {expected}: they belong to another model")
