"""Figures in one style, saved under ``figures/<profile>/`` as PNG (and SVG for print)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
import pandas as pd
import seaborn as sns
import torch

from ..core.checkpoint import atomic_write
from ..core.vocabulary import COMBINED, COMPUTE, CONTROL, ROUTES, SIZE


def use_style() -> None:
    """Apply the series' figure style (seaborn's whitegrid, notebook context) to matplotlib.
    The notebooks call it once; importing this module changes no global setting."""
    sns.set_theme(context="notebook", style="whitegrid")


def _log_x(ax, values) -> None:
    """Log x axis (labels on the decades only) when ``values`` span more than a decade."""
    values = pd.Series(values).dropna()
    if len(values) and values.max() > 10 * values.min() > 0:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())


def save(fig, folder: Path, name: str) -> None:
    """Write ``fig`` as ``name.png`` and ``name.svg`` (no timestamps in either). Returns nothing,
    so a notebook cell ending in ``plots.save(...)`` shows only the figure."""
    folder = Path(folder)
    for ext in ("png", "svg"):
        atomic_write(folder / f"{name}.{ext}",
                     lambda tmp, ext=ext: fig.savefig(tmp, format=ext, dpi=120,
                                                       bbox_inches="tight",
                                                       metadata={"Date": None} if ext == "svg" else None))


def image_grid(x: torch.Tensor, titles: list[str], ncols: int = 8, cmap=None, size: float = 1.6):
    """Show images (N, 3, H, W) in [0, 1], or (N, H, W) heatmaps with ``cmap``, titled."""
    nrows = (len(x) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * 1.15 * nrows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, x, titles):
        if img.ndim == 3:
            ax.imshow(img.permute(1, 2, 0).numpy())
        else:
            lim = float(img.abs().max()) or 1.0
            ax.imshow(img.numpy(), cmap=cmap, vmin=-lim, vmax=lim)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def sample_images(x: torch.Tensor, y: torch.Tensor, classes: list[str], n: int = 24):
    """The first ``n`` uint8 images (N, 3, 32, 32) titled with their class names."""
    return image_grid(x[:n].float() / 255, [classes[int(c)] for c in y[:n]])


def training_curves(history: pd.DataFrame, title: str = ""):
    """Loss and accuracy per epoch, train against validation."""
    long = history.melt(id_vars="epoch", value_vars=["train_loss", "val_loss", "train_acc", "val_acc"])
    long["metric"] = long["variable"].str.split("_").str[1].map({"loss": "loss", "acc": "accuracy (%)"})
    long["split"] = long["variable"].str.split("_").str[0]
    g = sns.relplot(data=long, x="epoch", y="value", hue="split", col="metric", kind="line",
                    marker="o", facet_kws={"sharey": False}, height=3.2, aspect=1.3)
    g.set_titles("{col_name}")
    for ax, name in zip(g.axes.flat, g.col_names):
        ax.set_ylabel(name)
    if title:
        g.figure.suptitle(title, y=1.03)
    return g.figure


def score_distributions(table: pd.DataFrame):
    """Layer-normalised filter scores per layer, one panel per criterion (log scale)."""
    t = table[table["score"] > 0]
    g = sns.catplot(data=t, x="layer", y="score", col="criterion", kind="box", col_wrap=3,
                    height=2.8, aspect=1.5, fliersize=1, sharey=False)
    g.set(yscale="log")
    for ax in g.axes.flat:
        ax.tick_params(axis="x", rotation=90, labelsize=7)
    g.set_titles("{col_name}")
    return g.figure


def correlation_heatmap(corr: pd.DataFrame, title: str = ""):
    fig, ax = plt.subplots(figsize=(5, 4))
    sns.heatmap(corr, annot=True, fmt=".2f", cmap="vlag", vmin=-1, vmax=1, ax=ax, square=True)
    ax.set_title(title)
    ax.set_xlabel("")
    ax.set_ylabel("")
    return fig


def relevance_heatmaps(images: torch.Tensor, relevance: torch.Tensor, titles: list[str], ncols: int = 8):
    """Images (N, 3, H, W) in [0, 1] above their LRP heatmaps (N, H, W), each map divided by its
    largest magnitude: red is evidence for the true class, blue against it (one colour bar).
    Each image-and-map pair is a block, with space between blocks."""
    n = len(images)
    rows = (n + ncols - 1) // ncols
    fig = plt.figure(figsize=(1.7 * ncols + 0.8, 3.9 * rows))
    outer = fig.add_gridspec(rows, 2, width_ratios=[ncols, 0.15], hspace=0.35, wspace=0.05)
    shown = None
    for i in range(n):
        block = outer[i // ncols, 0].subgridspec(2, ncols, hspace=0.05)
        top, bottom = fig.add_subplot(block[0, i % ncols]), fig.add_subplot(block[1, i % ncols])
        top.imshow(images[i].permute(1, 2, 0).numpy())
        top.set_title(titles[i], fontsize=8)
        lim = float(relevance[i].abs().max()) or 1.0
        shown = bottom.imshow(relevance[i].numpy() / lim, cmap="bwr", vmin=-1, vmax=1)
        top.axis("off")
        bottom.axis("off")
    if shown is not None:
        fig.colorbar(shown, cax=fig.add_subplot(outer[:, 1]), label="relevance / largest magnitude")
    return fig


def accuracy_curves(df: pd.DataFrame, x: str, y: str = "val_acc", hue: str = "criterion",
                    xlabel: str = "", title: str = "", baseline: float | None = None, style: str | None = None):
    """One line per ``hue`` value (and per ``style`` value: e.g. as pruned / recalibrated,
    drawn solid and dashed): accuracy against a compression axis. No bands: every point is
    one measurement."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=df, x=x, y=y, hue=hue, style=style or hue, markers=True, dashes=style is not None,
                 errorbar=None, ax=ax)
    if baseline is not None:
        ax.axhline(baseline, color="grey", ls=":", lw=1, label="baseline")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def per_layer(df: pd.DataFrame, y: str, ylabel: str, title: str = ""):
    """One line per criterion across layers (layers in network order)."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    sns.pointplot(data=df, x="layer", y=y, hue="criterion", ax=ax, markersize=4, linewidth=1.2)
    ax.tick_params(axis="x", rotation=90, labelsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")  # beside the data, not on it
    fig.tight_layout()
    return fig


def headline(points: pd.DataFrame, baseline_acc: float, max_drop: float = 1.0):
    """Test accuracy (mean ± standard deviation over seeds) against compression, one line per
    criterion and weight grid (a narrower int8 grid dashed), one panel per route, with the
    baseline and the ``max_drop`` band below it shaded, and the unpruned network fine-tuned alike
    (the control) where it ran."""
    routes = [r for r in ROUTES if r in set(points["route"])]
    fig, axes = plt.subplots(1, len(routes), figsize=(5.2 * len(routes), 4), sharey=True, squeeze=False)
    xlabel = {COMPUTE: "parameter reduction", SIZE: "file-size reduction (int8, sparse, LZMA)",
              COMBINED: "file-size reduction (filters, then weights)"}
    palette = dict(zip(sorted(set(points["criterion"]) - {CONTROL}), sns.color_palette()))
    for ax, route in zip(axes[0], routes):
        d = points[points["route"] == route]
        for (name, bits), g in d[d["criterion"] != CONTROL].groupby(["criterion", "weight_bits"]):
            g = g.sort_values("compression_x")
            narrow = bits < 8  # int8 weights on a narrower grid: dashed
            ax.errorbar(g["compression_x"], g["test_acc_mean"], yerr=g["test_acc_std"], marker="s" if narrow else "o",
                        ls="--" if narrow else "-", capsize=3, color=palette[name],
                        label=f"{name}{f', {int(bits)}-bit' if narrow else ''} (n={int(g['n'].min())})")
        control = d[d["criterion"] == CONTROL]
        if len(control):
            ax.errorbar(control["compression_x"], control["test_acc_mean"], yerr=control["test_acc_std"],
                        marker="*", ms=12, color="black", ls="", label="unpruned, fine-tuned alike")
        ax.axhline(baseline_acc, color="black", lw=1, label="baseline")
        ax.axhspan(baseline_acc - max_drop, baseline_acc, color="grey", alpha=0.2, label=f"within {max_drop:g} point")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ticks = [t for t in (1, 1.5, 2, 3, 4, 6, 10, 15, 20, 30, 50) if t <= d["compression_x"].max() * 1.05]
        ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
        ax.set_title(f"{route} route")
        ax.set_xlabel(xlabel[route])
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


SECONDARY = "report's operating point"
MARKERS = {"baseline": "*", "compute route": "o", "size route": "s", "combined route": "D", "int8 static": "P",
           SECONDARY: "v"}
"""The results figure's marker per group of networks (:func:`helpers.studies.results.networks`)."""


def pareto(nets: pd.DataFrame):
    """Test accuracy (mean ± standard deviation over seeds) against file size and against
    batch-1 latency: colour by criterion, marker by group, and the Pareto front of the headline
    networks (no other one is both smaller or faster and more accurate) as a step line. The
    report's operating point is secondary: when far below the others it is drawn at the lower
    edge, and a note gives its accuracies."""
    main = nets[nets["group"] != SECONDARY]
    low = float((main["test_acc"] - main["test_acc_std"].fillna(0)).min()) - 1.0
    high = float((main["test_acc"] + main["test_acc_std"].fillna(0)).max()) + 0.5
    colours = dict(zip(sorted(c for c in set(nets["criterion"]) if c), sns.color_palette()))
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.6), sharey=True)
    for ax, col, label in zip(axes, ("size_MB", "latency_b1_ms"), ("file size (MB)", "latency, batch 1 (ms)")):
        for r in nets.itertuples():
            below = r.group == SECONDARY and r.test_acc < low
            ax.errorbar(getattr(r, col), low + 0.15 if below else r.test_acc,
                        yerr=None if below else r.test_acc_std,
                        xerr=r.size_MB_std if col == "size_MB" and r.size_MB_std > 0 else None,
                        marker=MARKERS[r.group], ms=14 if r.group == "baseline" else 8, ls="", capsize=3,
                        color=colours.get(r.criterion, "black"), alpha=0.6 if r.group == SECONDARY else 1.0)
        front = _front(main, col)
        ax.step(front[col], front["test_acc"], where="post", color="black", lw=1, ls="--")
        _log_x(ax, nets[col])
        if ax.get_xscale() == "log":  # labelled at 1, 2 and 5 of each decade, as plain numbers
            ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel(label + (", log scale" if ax.get_xscale() == "log" else ""))
    axes[0].set_ylim(low, high)
    axes[0].set_ylabel("test accuracy (%)")
    sec = nets[(nets["group"] == SECONDARY) & (nets["test_acc"] < low)]
    if len(sec):
        accs = ", ".join(f"{r.criterion} {r.test_acc:.1f} %" for r in sec.itertuples())
        axes[0].annotate(f"{SECONDARY} (below): {accs}", (0.01, 0.06), xycoords="axes fraction", fontsize=8,
                         color="dimgrey")
    axes[-1].legend(handles=_legend(nets, colours), fontsize=9, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def _legend(nets: pd.DataFrame, colours: dict) -> list:
    """Legend entries: a colour per criterion, a marker per group, the front."""
    handles = [Line2D([], [], color=c, marker="o", ls="", label=name) for name, c in colours.items()]
    handles += [Line2D([], [], color="grey", marker=MARKERS[g], ls="", label=g)
                for g in MARKERS if g in set(nets["group"])]
    return handles + [Line2D([], [], color="black", ls="--", lw=1, label="Pareto front (headline networks)")]


def _front(d: pd.DataFrame, col: str) -> pd.DataFrame:
    """The points no other point beats on both ``col`` (lower) and test accuracy (higher)."""
    d = d.sort_values([col, "test_acc"], ascending=[True, False])
    return d[d["test_acc"] > d["test_acc"].cummax().shift(fill_value=-1.0)]


def lowdata_curves(rows: pd.DataFrame, kind: str, xlabel: str):
    """Accuracy against the fraction removed, one panel per reference size (columns) and
    recalibration (rows); the band is the standard deviation over seeds."""
    df = rows[rows["kind"] == kind].assign(
        BatchNorm=lambda t: t["bn_recalibrated"].map({False: "as pruned", True: "recalibrated"}))
    g = sns.relplot(data=df, x="fraction", y="val_acc", hue="label", style="label", markers=True, dashes=False,
                    col="ref_per_class", row="BatchNorm", kind="line", errorbar="sd", height=2.6, aspect=1.0,
                    facet_kws={"margin_titles": True})
    g.set_axis_labels(xlabel, "validation accuracy (%)")
    g.set_titles(col_template="{col_name} image(s) per class", row_template="{row_name}")
    sns.move_legend(g, "upper left", bbox_to_anchor=(1.0, 0.9), title="criterion")
    return g.figure


def lowdata_auc(summary: pd.DataFrame):
    """AUC (mean accuracy over the swept range) against reference images per class, with
    the standard deviation over seeds as error bars; one panel per kind and recalibration."""
    df = summary.assign(BatchNorm=lambda t: t["bn_recalibrated"].map({False: "as pruned", True: "recalibrated"}))
    g = sns.FacetGrid(df, col="kind", row="BatchNorm", hue="label", height=3.0, aspect=1.2,
                      sharey=False, margin_titles=True)
    g.map_dataframe(lambda data, color, label: plt.errorbar(
        data["ref_per_class"], data["auc_mean"], yerr=data["auc_std"], color=color, label=label,
        marker="o", ms=4, capsize=2, lw=1.2))
    for ax in g.axes.flat:
        ax.set_xscale("log")
        ax.set_xticks(sorted(df["ref_per_class"].unique()))
        ax.get_xaxis().set_major_formatter(plt.ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    g.set_axis_labels("reference images per class", "AUC: mean accuracy (%)")
    g.set_titles(col_template="{col_name}", row_template="{row_name}")
    g.add_legend(title="criterion")
    return g.figure


def budget(table: pd.DataFrame, max_drop: float = 1.0):
    """Drop against the baseline (validation and test; error bars: test's standard deviation
    over seeds) against the fine-tuning budget, one panel per study point, the ``max_drop``
    line marking the headline's criterion (:func:`helpers.studies.budget.summary`'s table)."""
    points = list(table.groupby(["route", "criterion", "point"], sort=False))
    fig, axes = plt.subplots(1, len(points), figsize=(4.6 * len(points), 3.6), sharey=True, squeeze=False)
    for ax, ((route, name, point), g) in zip(axes[0], points):
        g = g.sort_values("budget_epochs")
        ax.plot(g["budget_epochs"], g["val_drop"], marker="o", label="validation (locates the point)")
        ax.errorbar(g["budget_epochs"], g["test_drop"], yerr=g["test_acc_std"], marker="s", capsize=3,
                    label="test (reported)")
        ax.axhline(max_drop, color="black", lw=1, ls="--", label=f"{max_drop:g} point")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(g["budget_epochs"], [f"{b:g}" for b in g["budget_epochs"]])
        ax.xaxis.set_minor_formatter(NullFormatter())
        what = f"{g['compression_x'].mean():.1f}x file" if route != COMPUTE else \
            f"{g['compression_x'].mean():.2f}x params, {g['flops_x'].mean():.2f}x FLOPs"
        ax.set_title(f"{route}: {name} at {point:g} ({what})", fontsize=10)
        ax.set_xlabel("fine-tuning budget (epochs)")
        ax.set_ylabel("drop against the baseline (points)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
