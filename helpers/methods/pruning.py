"""Turning scores into smaller networks.

* Unstructured: ``torch.nn.utils.prune.global_unstructured`` ranked by per-weight scores,
  then made permanent; sparse storage (bitmask + kept values) measures the real saving.
* Structured: filters removed physically through Torch-Pruning's dependency graph, one
  pruning group per layer with the explicit indices of its lowest-scored filters.
  Allocations decide how many filters each layer keeps: the original report's (per-layer
  sparsity of an unstructured pass, minus a margin), uniform, or global.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune

from .criteria import check_scores, filter_layers, normalize_per_layer, weight_layers
from ..core.models import device_of
from ..core.vocabulary import GLOBAL, REPORT, UNIFORM


class PruningError(ValueError):
    """A sparsity, ratio or allocation that cannot be applied."""


def _check_fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise PruningError(f"{name} must be a number in [0, 1), got {value!r}")


# ----------------------------------------------------------------------------- unstructured
def unstructured_prune(model: nn.Module, scores: dict, sparsity: float, permanent: bool = True) -> nn.Module:
    """Zero the ``round(sparsity * N)`` lowest-scored of all N conv and linear weights, ranked
    globally across layers (:func:`unstructured_masks`). Returns a pruned copy; with
    ``permanent=False`` it keeps ``torch.nn.utils.prune``'s masks (``custom_from_mask``:
    ``weight = weight_orig * weight_mask``), so fine-tuning holds the removed weights at zero;
    :func:`make_permanent` ends that."""
    model = copy.deepcopy(model)
    masks = unstructured_masks(model, scores, sparsity)
    for n, m in weight_layers(model).items():
        keep = masks.pop(n).to(m.weight.device)
        if permanent:
            with torch.no_grad():
                m.weight.mul_(keep)
        else:
            prune.custom_from_mask(m, "weight", keep)
    return model


def unstructured_masks(model: nn.Module, scores: dict, sparsity: float) -> dict[str, torch.Tensor]:
    """Keep-masks (bool, shaped like each weight) that remove the ``round(sparsity * N)`` weights of
    lowest float32 ``|score|``: those below one global threshold (:func:`_kth_smallest`), then as
    many of those tied at it as are still needed, drawn at random with a fixed seed (the criterion
    ranks them equal; a weight of zero relevance, say, is often one of thousands). What
    ``prune.global_unstructured`` with ``L1Unstructured`` removes, whose top-k leaves the order of
    ties unspecified, in near one copy of the scores: the library concatenates every score, sorts
    them and keeps a float mask and the original weights of every layer (7 GB more for
    torchvision VGG-16)."""
    _check_fraction("sparsity", sparsity)
    check_scores(model, scores, "weight")
    layers = weight_layers(model)
    bits = {n: _abs_bits(scores["weight"][n]) for n in layers}
    k = round(sparsity * sum(b.numel() for b in bits.values()))
    threshold = _kth_smallest(list(bits.values()), k)
    remove = {n: b < threshold for n, b in bits.items()}
    tied = {n: torch.nonzero(b == threshold).flatten() for n, b in bits.items()}
    del bits
    need = k - sum(int(r.count_nonzero()) for r in remove.values())
    pick = torch.zeros(sum(len(t) for t in tied.values()), dtype=torch.bool)
    pick[torch.randperm(len(pick), generator=torch.Generator().manual_seed(TIE_SEED))[:need]] = True
    for (n, t), chosen in zip(tied.items(), pick.split([len(t) for t in tied.values()])):
        remove[n][t[chosen]] = True
    return {n: ~remove[n].view(m.weight.shape) for n, m in layers.items()}


TIE_SEED = 0
"""The seed of the draw among weights tied at the threshold (:func:`unstructured_masks`)."""


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every pruning mask of ``model`` into its weights (in place); returns ``model``."""
    for m in weight_layers(model).values():
        if prune.is_pruned(m) and hasattr(m, "weight_mask"):
            prune.remove(m, "weight")
    return model


def sparsity_profile(model: nn.Module) -> dict[str, float]:
    """Fraction of zero weights in every conv and linear layer."""
    return {n: 1 - int(torch.count_nonzero(m.weight)) / m.weight.numel()
            for n, m in weight_layers(model).items()}


def global_sparsity(model: nn.Module) -> float:
    layers = weight_layers(model).values()
    zeros = sum(m.weight.numel() - int(torch.count_nonzero(m.weight)) for m in layers)
    return zeros / sum(m.weight.numel() for m in layers)


def sparse_state(model: nn.Module) -> dict:
    """State dict with every conv/linear weight stored as a bitmask plus its nonzero values."""
    return sparse_tensors(model.state_dict(), [f"{n}.weight" for n in weight_layers(model)])


def sparse_tensors(state: dict, keys) -> dict:
    """``state`` with each tensor named in ``keys`` stored as ``<key>.mask`` (one bit per
    entry, packed), ``<key>.values`` (the nonzero entries, same dtype) and ``<key>.shape``."""
    state = dict(state)
    for key in keys:
        w = state.pop(key).cpu()
        mask = (w != 0).flatten().numpy()
        state[f"{key}.mask"] = torch.from_numpy(np.packbits(mask))
        state[f"{key}.values"] = w.flatten()[torch.from_numpy(mask)]
        state[f"{key}.shape"] = torch.tensor(w.shape)
    return state


def dense_state(sparse: dict) -> dict:
    """Inverse of :func:`sparse_state` and :func:`sparse_tensors`."""
    state = {k: v for k, v in sparse.items() if not k.endswith((".mask", ".values", ".shape"))}
    for key in [k for k in sparse if k.endswith(".mask")]:
        base = key[: -len(".mask")]
        shape = tuple(sparse[f"{base}.shape"].tolist())
        n = int(np.prod(shape))
        mask = torch.from_numpy(np.unpackbits(sparse[key].numpy())[:n].astype(bool))
        w = torch.zeros(n, dtype=sparse[f"{base}.values"].dtype)
        w[mask] = sparse[f"{base}.values"]
        state[base] = w.view(shape)
    return state


# ----------------------------------------------------------------------------- allocations
def report_allocation(model: nn.Module, weight_scores: dict, sparsity: float,
                      margin: float = 0.01) -> dict[str, float]:
    """The original report's: prune weights globally to ``sparsity`` with ``weight_scores``,
    read each filter layer's sparsity, subtract ``margin``; those are the filter ratios."""
    _check_fraction("margin", margin)
    profile = global_layer_sparsity(model, weight_scores, sparsity)
    return {n: min(max(profile[n] - margin, 0.0), 0.99) for n in filter_layers(model)}


def global_layer_sparsity(model: nn.Module, scores: dict, sparsity: float) -> dict[str, float]:
    """Per-layer sparsity that :func:`unstructured_prune` to ``sparsity`` gives, without building
    the pruned model (:func:`unstructured_masks`)."""
    return {n: 1 - int(keep.count_nonzero()) / keep.numel()
            for n, keep in unstructured_masks(model, scores, sparsity).items()}


def _abs_bits(score: torch.Tensor) -> torch.Tensor:
    """``|score|`` as float32 viewed as int32: non-negative floats order like their bits."""
    s = score.detach().to(torch.float32).flatten()
    if s.data_ptr() != score.data_ptr():
        return s.abs_().view(torch.int32)  # a copy already
    if not torch.signbit(s).any():  # float32 scores, all >= 0 (every criterion's): read in place
        return s.view(torch.int32)
    return s.abs().view(torch.int32)  # never change the caller's scores


def _kth_smallest(values: list[torch.Tensor], k: int) -> int:
    """The ``k``-th smallest (1-based; ``k = 0`` gives -1) of non-negative int32 ``values``: a
    histogram of their top 16 bits finds the bin that holds it, ``torch.kthvalue`` finishes
    inside that bin. Two passes, no sort or copy of all values."""
    if k == 0:
        return -1
    hist = sum(torch.bincount(v >> 16, minlength=1 << 15) for v in values)
    cum = hist.cumsum(0)
    top = int(torch.searchsorted(cum, k))  # first bin whose cumulative count reaches k
    before = int(cum[top - 1]) if top else 0
    inside = torch.cat([v[(v >> 16) == top] for v in values])
    return int(torch.kthvalue(inside, k - before).values)


def uniform_allocation(model: nn.Module, ratio: float) -> dict[str, float]:
    """The same filter ratio in every layer."""
    _check_fraction("ratio", ratio)
    return {n: ratio for n in filter_layers(model)}


def keep_counts(model: nn.Module, ratios: dict[str, float], round_to: int = 1) -> dict[str, int]:
    """Filters kept per layer for per-layer removal ratios (at least one per layer).

    ``round_to`` > 1 rounds each count to the nearest multiple of it (at least one multiple,
    at most the layer's filters), like Torch-Pruning's ``round_to``: blocked CPU kernels pad
    channels to the vector width (16 floats with AVX-512), so unaligned counts save less time.
    """
    if not isinstance(round_to, int) or round_to < 1:
        raise PruningError(f"round_to must be a positive integer (1: no rounding), got {round_to!r}")
    layers = filter_layers(model)
    unknown = sorted(set(ratios) - set(layers))
    if unknown:
        raise PruningError(f"ratios given for unknown layers {unknown}; filter layers: {sorted(layers)}")
    counts = {}
    for n, m in layers.items():
        r = ratios.get(n, 0.0)
        _check_fraction(f"filter ratio of layer {n}", r)
        c = m.weight.shape[0]
        k = round_to * round(c * (1 - r) / round_to)
        counts[n] = min(c, max(1, round_to, k))
    return counts


def global_counts(model: nn.Module, filter_scores: dict, ratio: float) -> dict[str, int]:
    """One ranking of all filters on layer-normalised scores; the lowest ``ratio`` removed
    (each layer keeps at least one filter)."""
    _check_fraction("ratio", ratio)
    check_scores(model, {"filter": filter_scores}, "filter")
    normed = normalize_per_layer(filter_scores)
    names = list(normed)
    flat = torch.cat([normed[n] for n in names])
    owner = torch.cat([torch.full((len(normed[n]),), i) for i, n in enumerate(names)])
    order = torch.argsort(flat, descending=True, stable=True)
    n_keep = len(flat) - round(ratio * len(flat))
    kept = torch.bincount(owner[order[:n_keep]], minlength=len(names))
    return {n: max(1, int(kept[i])) for i, n in enumerate(names)}


ALLOCATIONS = {
    # the original report's: per-layer sparsity of an unstructured pass, minus a margin
    REPORT: lambda model, scores, ratio, report_ratios: keep_counts(model, report_ratios),
    UNIFORM: lambda model, scores, ratio, report_ratios: keep_counts(model, uniform_allocation(model, ratio)),
    GLOBAL: lambda model, scores, ratio, report_ratios: global_counts(model, scores, ratio),
}
"""Allocation name -> how many filters each layer keeps."""


def allocation_counts(model: nn.Module, allocation: str, filter_scores: dict, ratio: float,
                      report_ratios: dict | None = None) -> dict[str, int]:
    """Filters kept per layer under ``allocation`` ("report" uses ``report_ratios``)."""
    if allocation not in ALLOCATIONS:
        raise PruningError(f"unknown allocation {allocation!r}; valid: {', '.join(ALLOCATIONS)}")
    if allocation == REPORT and report_ratios is None:
        raise PruningError("the 'report' allocation needs report_ratios (pruning.report_allocation)")
    return ALLOCATIONS[allocation](model, filter_scores, ratio, report_ratios)


# ----------------------------------------------------------------------------- structured
def _release_trace(graph: tp.DependencyGraph) -> None:
    """Drop the autograd trace the dependency graph keeps on its nodes. Its nodes refer to each
    other, so the graph waits for the cycle collector, and the trace holds the unpruned weights
    (0.4 GB for the paper profile's first classifier layer) until then."""
    for node in graph.module2node.values():
        node.grad_fn = None


def prune_filters(model: nn.Module, filter_scores: dict, counts: dict[str, int],
                  input_size: int = 32) -> nn.Module:
    """A copy of ``model`` whose filter layers keep exactly ``counts[layer]`` filters, the
    highest-scored ones (ranked in float32, as Torch-Pruning's pruner ranks). For each layer,
    Torch-Pruning's dependency graph removes the others as one pruning group with explicit
    indices, so the following layers' inputs (BatchNorm, next conv, the flattened classifier
    input) shrink with them. The class layer's outputs are never touched."""
    model = copy.deepcopy(model).eval()
    check_scores(model, {"filter": filter_scores}, "filter")
    layers = filter_layers(model)
    for n, m in layers.items():
        c, k = m.weight.shape[0], counts.get(n, m.weight.shape[0])
        if not isinstance(k, int) or not 1 <= k <= c:
            raise PruningError(f"layer {n} has {c} filters; cannot keep {k!r} (keep 1..{c})")
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=torch.zeros(1, 3, input_size, input_size, device=device_of(model)))
    for n, m in layers.items():
        drop = _lowest(filter_scores[n], m.weight.shape[0] - counts.get(n, m.weight.shape[0]))
        if drop:
            fn = tp.prune_conv_out_channels if isinstance(m, nn.Conv2d) else tp.prune_linear_out_channels
            graph.get_pruning_group(m, fn, idxs=drop).prune()
    _release_trace(graph)
    got = {n: m.weight.shape[0] for n, m in layers.items()}
    wanted = {n: counts.get(n, m) for n, m in got.items()}
    if got != wanted:
        raise PruningError(f"Torch-Pruning kept {got}, expected {wanted}")
    return model


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` lowest scores, in ascending index order: ``torch.topk`` on float32
    scores, the selection Torch-Pruning's own pruner makes (so equal scores go as it would)."""
    if n == 0:
        return []
    return sorted(torch.topk(scores.float(), n, largest=False).indices.tolist())


def kept_filters(model: nn.Module) -> dict[str, int]:
    return {n: m.weight.shape[0] for n, m in filter_layers(model).items()}


def filters_removed(model: nn.Module, counts: dict[str, int]) -> float:
    """Fraction of ``model``'s filters that keeping ``counts[layer]`` per layer removes."""
    return 1 - sum(counts.values()) / sum(kept_filters(model).values())


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches_iter, n_batches: int = 20) -> nn.Module:
    """Re-estimate BatchNorm running statistics on ``n_batches`` training batches (no
    gradient steps, on the model's device): cheap, and it recovers much of the accuracy lost
    to filter removal."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.train()
    dev = device_of(model)
    for i, (x, _) in enumerate(batches_iter):
        if i >= n_batches:
            break
        model(x.to(dev))
    return model.eval()
