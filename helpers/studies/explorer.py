"""The interactive explorer of notebook 09: prune the saved baseline by any criterion, LRP
composite, allocation and amount, and see at once what it does to the network.

Plain functions; the notebook wires them to ipywidgets. :func:`setup` prepares everything a
change needs (a small reference set, a fixed validation subset, recalibration batches, a few
images and their LRP heatmaps on the unpruned network); :func:`view` answers one choice:
filters kept per layer, parameters and FLOPs, validation accuracy on the subset as pruned and
after BatchNorm recalibration, and LRP heatmaps of the same images after pruning. Scores are
computed once per criterion and composite, then reused.
"""
from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass, field

import io

from matplotlib.figure import Figure
import pandas as pd
import torch
from torch import nn

from ..core import config, measure
from ..core.vocabulary import GLOBAL, LRP, REPORT
from ..methods import composites, criteria, pruning
from ..core.data import Data, Split, batches, class_balanced_sample, denormalize, normalize
from ..methods.training import evaluate

KINDS = ("filters", "weights")


class ExplorerError(ValueError):
    """A choice the explorer cannot show (the message says what to change)."""


@dataclass
class Explorer:
    model: nn.Module
    p: config.Profile
    ref: Split
    val: Split
    recal: list
    x: torch.Tensor
    y: torch.Tensor
    before: torch.Tensor
    cache: dict = field(default_factory=dict)


def setup(model: nn.Module, d: Data, p: config.Profile, ref_per_class: int = 2, val_images: int = 500,
          recal_batches: int = 2, images: int = 4) -> Explorer:
    """Everything a change needs, computed once (seeded by the profile's seed)."""
    g = torch.Generator().manual_seed(p.seed)
    idx = torch.randperm(len(d.val), generator=g)[:val_images]
    val = Split(d.val.x[idx], d.val.y[idx])
    it = batches(d.train, p.batch_size, p.input_size, shuffle=True, generator=g, train_augment=True)
    recal = [b for b in itertools.islice(it, recal_batches)]
    x, y = normalize(d.test.x[:images], p.input_size), d.test.y[:images]
    model = model.eval()
    return Explorer(model, p, class_balanced_sample(d.train, ref_per_class, p.seed), val, recal, x, y,
                    criteria.lrp_heatmaps(model, x, y))


def scores_for(ex: Explorer, criterion: str, composite: str) -> dict:
    """The criterion's scores on the reference set (LRP with ``composite``), cached."""
    if criterion not in criteria.CRITERIA:
        raise ExplorerError(f"unknown criterion {criterion!r}; valid: {', '.join(criteria.CRITERIA)}")
    key = (criterion, composite if criterion == LRP else "")
    if key not in ex.cache:
        try:
            composites.check(composite)
        except ValueError as err:
            raise ExplorerError(str(err)) from None
        ex.cache[key] = criteria.compute_scores(ex.model, ex.ref, criterion, composite=composite,
                                                seed=ex.p.seed, size=ex.p.input_size)
    return ex.cache[key]


def prune(ex: Explorer, criterion: str, composite: str, allocation: str, kind: str, amount: float) -> nn.Module:
    """The baseline pruned by one choice: ``amount`` of the filters (``allocation``; for
    ``report``, ``amount`` is the weight sparsity its per-layer ratios are read from) or of
    the weights (global, ``kind="weights"``)."""
    if kind not in KINDS:
        raise ExplorerError(f"kind must be one of {KINDS}, got {kind!r}")
    if not 0 <= amount < 1:
        raise ExplorerError(f"the amount to remove must lie in [0, 1), got {amount!r}")
    s = scores_for(ex, criterion, composite)
    if kind == "weights":
        if allocation != GLOBAL:
            raise ExplorerError(f"weights are ranked globally; the '{allocation}' allocation applies to filters only")
        return pruning.unstructured_prune(ex.model, s, amount)
    if allocation not in pruning.ALLOCATIONS:
        raise ExplorerError(f"unknown allocation {allocation!r}; valid: {', '.join(pruning.ALLOCATIONS)}")
    ratios = pruning.report_allocation(ex.model, s, amount) if allocation == REPORT else None
    counts = pruning.allocation_counts(ex.model, allocation, s["filter"], amount, ratios)
    return pruning.prune_filters(ex.model, s["filter"], counts, ex.p.input_size)


def view(ex: Explorer, criterion: str, composite: str, allocation: str, kind: str, amount: float) -> dict:
    """What one choice does: kept filters per layer, cost, accuracy on the validation subset
    as pruned and BatchNorm-recalibrated, heatmaps after pruning, and the seconds it took."""
    start = time.perf_counter()
    pruned = prune(ex, criterion, composite, allocation, kind, amount)
    recal = pruning.recalibrate_batchnorm(copy.deepcopy(pruned), iter(ex.recal), len(ex.recal))
    kept = pd.DataFrame({"layer": list(pruning.kept_filters(ex.model)),
                         "original": list(pruning.kept_filters(ex.model).values()),
                         "kept": list(pruning.kept_filters(pruned).values())})
    out = {"kept": kept, "parameters": measure.nonzero_parameters(pruned),
           "flops": measure.flops(pruned, ex.p.input_size),
           "val_acc": evaluate(pruned, ex.val, ex.p.eval_batch_size, ex.p.input_size)["acc"],
           "val_acc_recal": evaluate(recal, ex.val, ex.p.eval_batch_size, ex.p.input_size)["acc"],
           "after": criteria.lrp_heatmaps(pruned, ex.x, ex.y)}
    out["seconds"] = time.perf_counter() - start
    return out


def summary(ex: Explorer, v: dict) -> str:
    """One line: cost against the baseline, the two accuracies, the time the change took."""
    params, flops = measure.nonzero_parameters(ex.model), measure.flops(ex.model, ex.p.input_size)
    return (f"{v['parameters']:,} parameters ({params / v['parameters']:.2f}x fewer), {v['flops'] / 1e6:.1f} M FLOPs "
            f"({flops / v['flops']:.2f}x fewer); validation subset ({len(ex.val)} images): {v['val_acc']:.1f} % as "
            f"pruned, {v['val_acc_recal']:.1f} % BatchNorm-recalibrated; answered in {v['seconds']:.2f} s\n"
            + relevance_sentence(ex, v))


def relevance_totals(ex: Explorer, v: dict) -> tuple[float, float]:
    """Total input relevance of the heatmap images (summed over pixels and images; for LRP it
    approximates the sum of their true-class logits) before and after pruning."""
    return float(ex.before.sum()), float(v["after"].sum())


def relevance_sentence(ex: Explorer, v: dict) -> str:
    """How much relevance the pruned network still assigns to the heatmap images."""
    before, after = relevance_totals(ex, v)
    change = f" ({(after - before) / abs(before):+.0%})" if before else ""
    return (f"total relevance of the {len(ex.x)} heatmap images: {before:.3g} before pruning, {after:.3g} after"
            f"{change}; each heatmap row has its own colour scale")


def _scale(maps: torch.Tensor) -> float:
    """The symmetric colour limit of a row of heatmaps: its largest magnitude (1 when all zero)."""
    return float(maps.abs().max()) or 1.0


def figure(ex: Explorer, v: dict):
    """Filters kept per layer (bars against the original count) and each image's LRP heatmap
    before and after pruning (red: evidence for the class, blue: against). Each heatmap row has
    its own colour scale, printed on its colour bar: pruned relevance is often far smaller, and a
    shared scale would leave the "after" row blank."""
    n = len(ex.x)
    fig = Figure(figsize=(4.4 + 1.7 * n, 4.6))  # no pyplot: drawn from widget callbacks too
    grid = fig.add_gridspec(3, n + 2, width_ratios=[3.2] + [1] * n + [0.12])
    ax = fig.add_subplot(grid[:, 0])
    ax.barh(v["kept"]["layer"], v["kept"]["original"], color="lightgrey", label="original")
    ax.barh(v["kept"]["layer"], v["kept"]["kept"], color="tab:blue", label="kept")
    ax.invert_yaxis()
    ax.tick_params(labelsize=9)
    ax.set_xlabel("filters", fontsize=10)
    ax.legend(fontsize=9, loc="lower right")
    rows = [("image", denormalize(ex.x).permute(0, 2, 3, 1), None),
            ("before", ex.before, _scale(ex.before)), ("after", v["after"], _scale(v["after"]))]
    for r, (title, maps, lim) in enumerate(rows):
        for i in range(n):
            a = fig.add_subplot(grid[r, i + 1])
            shown = a.imshow(maps[i].numpy(), **({} if lim is None else {"cmap": "bwr", "vmin": -lim, "vmax": lim}))
            a.set_title(title, fontsize=10)
            a.axis("off")
        if lim is not None:
            bar = fig.colorbar(shown, cax=fig.add_subplot(grid[r, -1]))
            bar.set_label(f"{title}\n±{lim:.2g}", fontsize=9)
            bar.ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (what the widgets display)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def controls(ex: Explorer, criterion: str, composite: str, allocation: str, kind: str, amount: float):
    """The explorer's widgets: criterion, composite, allocation, what to remove and how much;
    every change redraws the view below them (a choice it cannot show prints why)."""
    import ipywidgets as w
    from IPython.display import Image, display
    pick = {"criterion": w.Dropdown(options=list(criteria.CRITERIA), value=criterion, description="criterion"),
            "composite": w.Dropdown(options=list(composites.COMPOSITES), value=composite, description="composite"),
            "allocation": w.Dropdown(options=list(pruning.ALLOCATIONS), value=allocation, description="allocation"),
            "kind": w.ToggleButtons(options=list(KINDS), value=kind, description="remove"),
            "amount": w.FloatSlider(value=amount, min=0.0, max=0.95, step=0.05, description="amount",
                                    continuous_update=False, readout_format=".2f")}
    out = w.Output()

    def show(_=None):
        with out:
            out.clear_output(wait=True)
            try:
                v = view(ex, **{k: c.value for k, c in pick.items()})
            except (ExplorerError, pruning.PruningError) as err:
                print(f"cannot show this choice: {err}")
                return
            print(summary(ex, v))
            display(Image(png(figure(ex, v))))

    for c in pick.values():
        c.observe(show, names="value")
    show()
    box = w.VBox([w.HBox([pick["criterion"], pick["composite"], pick["allocation"]]),
                  w.HBox([pick["kind"], pick["amount"]]), out])
    box.pick, box.out = pick, out  # for tests and scripted use
    return box


def timing(ex: Explorer, changes: list[dict]) -> pd.DataFrame:
    """Seconds each change in ``changes`` (keyword arguments of :func:`view`) takes, in order
    (the first use of a criterion or composite includes computing its scores)."""
    rows = []
    for c in changes:
        start = time.perf_counter()
        view(ex, **c)
        rows.append({**c, "seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)
