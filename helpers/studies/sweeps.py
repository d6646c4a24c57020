"""The experiments of notebooks 03 and 04: pruning sweeps without fine-tuning (the speed
benchmark is in :mod:`helpers.studies.benchmark`)."""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from ..core import artifacts, config, measure, models, progress
from ..core.vocabulary import GLOBAL
from ..methods import pruning
from ..core.data import Data, batches
from ..core.models import has_batchnorm
from ..methods.training import evaluate, save_model


def unstructured_sweep(model: nn.Module, all_scores: dict[str, dict], d: Data, p: config.Profile,
                       sparsities: list[float]) -> pd.DataFrame:
    """Validation accuracy and loss of global unstructured pruning, no fine-tuning."""
    rows = []
    for name, s in all_scores.items():
        for sp in progress.steps(sparsities, f"unstructured {name}, sparsity"):
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
    plain = recal = evaluate(pruned, d.val, p.eval_batch_size, p.input_size)
    if has_batchnorm(pruned):  # without BatchNorm (torchvision VGG-16) recalibration changes nothing
        recal = evaluate(recalibrated(pruned, d, p), d.val, p.eval_batch_size, p.input_size)
    row = {"filters_removed": pruning.filters_removed(model, pruning.kept_filters(pruned)),
           "val_acc": plain["acc"], "val_loss": plain["loss"],
           "val_acc_bn_recal": recal["acc"], "val_loss_bn_recal": recal["loss"],
           **measure.cost(pruned, p.input_size)}
    if latency:
        row.update(measure.latency_pair(pruned, p.input_size, p.latency_budget_s))
    return row


def structured_sweep(model: nn.Module, all_scores: dict[str, dict], d: Data, p: config.Profile,
                     ratios: list[float], allocation: str = GLOBAL) -> pd.DataFrame:
    """Accuracy (plain and BatchNorm-recalibrated) against the fraction of filters removed."""
    rows = []
    for name, s in all_scores.items():
        for r in progress.steps(ratios, f"structured {name}, fraction of filters"):
            counts = pruning.allocation_counts(model, allocation, s["filter"], r)
            pruned = pruning.prune_filters(model, s["filter"], counts, p.input_size)
            rows.append({"criterion": name, "ratio": r, **structured_point(model, pruned, d, p)})
    return pd.DataFrame(rows)


def allocations(model: nn.Module, all_scores: dict[str, dict], names: list[str], target: float,
                report_ratios: dict[str, float], d: Data, p: config.Profile) -> pd.DataFrame:
    """Notebook 04: every criterion under every allocation at ``target`` of the filters removed,
    each pruned network measured (:func:`structured_point`, latency included) and saved."""
    rows = []
    for name in names:
        s = all_scores[name]["filter"]
        for allocation in pruning.ALLOCATIONS:
            counts = pruning.allocation_counts(model, allocation, s, target, report_ratios)
            pruned = pruning.prune_filters(model, s, counts, p.input_size)
            row = {"criterion": name, "allocation": allocation,
                   **structured_point(model, pruned, d, p, latency=True)}
            save_model(pruned, models.spec_of(pruned, p.arch), artifacts.pruned(p, name, allocation).path, p,
                       metrics=row, counts=counts)
            rows.append(row)
    return pd.DataFrame(rows)


def kept_filters(model: nn.Module, all_scores: dict[str, dict], names: list[str], target: float,
                 report_counts: dict[str, int]) -> pd.DataFrame:
    """Filters kept per layer (long form: criterion, layer, kept) under the global allocation of
    each criterion, the report's allocation (the same for every criterion) and the baseline."""
    rows = [{"criterion": f"{n} (global)", "layer": layer, "kept": k} for n in names
            for layer, k in pruning.allocation_counts(model, GLOBAL, all_scores[n]["filter"], target).items()]
    rows += [{"criterion": "any (report)", "layer": layer, "kept": k} for layer, k in report_counts.items()]
    rows += [{"criterion": "baseline", "layer": layer, "kept": k} for layer, k in pruning.kept_filters(model).items()]
    return pd.DataFrame(rows)
