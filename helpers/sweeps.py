"""The experiments of notebooks 03 and 04: pruning sweeps and side-by-side measurements."""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import config, measure, models, pruning
from .criteria import weight_magnitude
from .data import Data, batches
from .training import evaluate


def unstructured_sweep(model: nn.Module, all_scores: dict[str, dict], d: Data, p: config.Profile,
                       sparsities: list[float]) -> pd.DataFrame:
    """Validation accuracy and loss of global unstructured pruning, no fine-tuning."""
    rows = []
    for name, s in all_scores.items():
        for sp in tqdm(sparsities, desc=name, leave=False, disable=config.quiet()):
            pruned = pruning.unstructured_prune(model, s, sp)
            val = evaluate(pruned, d.val, p.eval_batch_size, p.input_size)
            rows.append({"criterion": name, "sparsity": sp,
                         "achieved": pruning.global_sparsity(pruned),
                         "val_acc": val["acc"], "val_loss": val["loss"]})
    return pd.DataFrame(rows)


def layer_sparsity_table(model: nn.Module, all_scores: dict[str, dict], sparsity: float) -> pd.DataFrame:
    """Per-layer sparsity at one global sparsity, for each criterion."""
    rows = []
    for name, s in all_scores.items():
        prof = pruning.sparsity_profile(pruning.unstructured_prune(model, s, sparsity))
        rows += [{"criterion": name, "layer": layer, "sparsity": v} for layer, v in prof.items()]
    return pd.DataFrame(rows)


def sparse_storage_table(model: nn.Module, all_scores: dict[str, dict], sparsity: float) -> pd.DataFrame:
    """Dense against bitmask+values size on disk of the unstructured-pruned model."""
    rows = []
    for name, s in all_scores.items():
        pruned = pruning.unstructured_prune(model, s, sparsity)
        dense = measure.state_dict_bytes(pruned.state_dict())
        sparse = measure.state_dict_bytes(pruning.sparse_state(pruned))
        rows.append({"criterion": name, "sparsity": sparsity, "dense_MB": dense / measure.MB,
                     "sparse_MB": sparse / measure.MB, "ratio": dense / sparse})
    return pd.DataFrame(rows)


def recalibrated(model: nn.Module, d: Data, p: config.Profile, n_batches: int = 20) -> nn.Module:
    """A copy of ``model`` with BatchNorm statistics re-estimated on training batches."""
    import copy
    g = torch.Generator().manual_seed(p.seed)
    it = batches(d.train, p.batch_size, p.input_size, shuffle=True, generator=g, train_augment=True)
    return pruning.recalibrate_batchnorm(copy.deepcopy(model), it, n_batches)


def structured_point(model: nn.Module, pruned: nn.Module, d: Data, p: config.Profile,
                     latency: bool = False) -> dict:
    """Accuracy without fine-tuning (plain and BatchNorm-recalibrated) and cost of ``pruned``."""
    plain = evaluate(pruned, d.val, p.eval_batch_size, p.input_size)
    recal = evaluate(recalibrated(pruned, d, p), d.val, p.eval_batch_size, p.input_size)
    row = {"filters_removed": pruning.filters_removed(model, pruning.kept_filters(pruned)), "val_acc": plain["acc"], "val_loss": plain["loss"],
           "val_acc_bn_recal": recal["acc"], "val_loss_bn_recal": recal["loss"],
           "parameters": measure.parameters(pruned), "flops": measure.flops(pruned, p.input_size),
           "size_MB": measure.size_on_disk(pruned)["MB"]}
    if latency:
        row.update(measure.latency_pair(pruned, p.input_size))
    return row


ALLOCATIONS = ("report", "uniform", "global")


def allocation_counts(model: nn.Module, allocation: str, filter_scores: dict, ratio: float,
                      report_ratios: dict | None = None) -> dict[str, int]:
    """Filters kept per layer under ``allocation`` ("report" uses ``report_ratios``)."""
    if allocation == "report":
        return pruning.keep_counts(model, report_ratios)
    if allocation == "uniform":
        return pruning.keep_counts(model, pruning.uniform_allocation(model, ratio))
    if allocation == "global":
        return pruning.global_counts(model, filter_scores, ratio)
    raise ValueError(f"unknown allocation {allocation!r}; valid: {', '.join(ALLOCATIONS)}")


def structured_sweep(model: nn.Module, all_scores: dict[str, dict], d: Data, p: config.Profile,
                     ratios: list[float], allocation: str = "global") -> pd.DataFrame:
    """Accuracy (plain and BatchNorm-recalibrated) against the fraction of filters removed."""
    rows = []
    for name, s in all_scores.items():
        for r in tqdm(ratios, desc=name, leave=False, disable=config.quiet()):
            counts = allocation_counts(model, allocation, s["filter"], r)
            pruned = pruning.prune_filters(model, s["filter"], counts, p.input_size)
            rows.append({"criterion": name, "ratio": r, **structured_point(model, pruned, d, p)})
    return pd.DataFrame(rows)


def half_flops_model(model: nn.Module, filter_scores: dict, input_size: int,
                     ratio: float = 0.29) -> nn.Module:
    """``model`` with ``ratio`` of every layer's filters removed (uniform allocation):
    0.29 leaves about half the FLOPs of VGG-16-BN, since a conv's cost scales with
    (kept inputs) x (kept outputs)."""
    counts = allocation_counts(model, "uniform", filter_scores, ratio)
    return pruning.prune_filters(model, filter_scores, counts, input_size)


def speed_benchmark(model: nn.Module, pruned: nn.Module, input_size: int,
                    label: str = "baseline") -> pd.DataFrame:
    """Baseline and pruned latency measured side by side (interleaved rounds, 2 threads),
    with the FLOPs ratio the speed-up should follow."""
    flops_ratio = measure.flops(model, input_size) / measure.flops(pruned, input_size)
    rows = []
    for batch, repeats in ((1, 50), (256, 7)):
        t = measure.latency_side_by_side({"baseline": model, "pruned": pruned}, batch,
                                         input_size, repeats=repeats)
        speedup = t["baseline"] / t["pruned"]
        rows.append({"model": label, "batch": batch, "baseline_ms": 1e3 * t["baseline"],
                     "pruned_ms": 1e3 * t["pruned"], "speedup": speedup,
                     "flops_ratio": flops_ratio, "speedup_over_flops_ratio": speedup / flops_ratio})
    return pd.DataFrame(rows)


def full_width_speed_benchmark(input_size: int, seed: int = 0) -> pd.DataFrame:
    """The same benchmark on full-width VGG-16-BN (the paper_scratch architecture). Latency
    does not depend on weight values, so the model is freshly initialised (seeded) and
    pruned by its weights' L1 norms; no training is needed to time it."""
    torch.manual_seed(seed)
    model = models.build_model(models.vgg16_bn_spec(1.0)).eval()
    half = half_flops_model(model, weight_magnitude(model)["filter"], input_size)
    return speed_benchmark(model, half, input_size, label="VGG-16-BN width 1.0 (untrained)")
