"""What each notebook's numbers show, in words.

Every notebook ends with a "What this shows" cell that displays :func:`markdown` of the
sentences below, written from the tables the notebook has just saved (the unflattering
findings included), and a pointer to the next notebook. Notebook 08 collects the same sentences
into ``REPORT.md``.
"""
from __future__ import annotations

import pandas as pd

from ..core.vocabulary import LRP

NEXT = {"01": ("02_relevance", "scores every filter and weight by each criterion"),
        "02": ("03_unstructured_pruning", "removes the lowest-scored weights"),
        "03": ("04_structured_pruning", "removes whole filters"),
        "04": ("05_low_data", "asks whether LRP wins with few reference images and no fine-tuning"),
        "05": ("06_fine_tuning", "fine-tunes the pruned networks: the headline"),
        "06": ("07_quantization", "quantizes the chosen fine-tuned model to int8"),
        "07": ("08_results", "collects everything into the report's table and REPORT.md"),
        "08": ("09_explorer", "lets you prune the baseline yourself, interactively")}


def within(max_drop: float) -> str:
    """The headline's rule in words: ``within 1 point`` (the profile's ``headline_max_drop``)."""
    return f"within {max_drop:g} point{'' if max_drop == 1 else 's'}"


def markdown(lines: list[str], notebook: str | None = None) -> str:
    """The sentences as a Markdown list, then the pointer to the notebook after ``notebook``."""
    text = "\n".join(f"- {line}" for line in lines)
    if notebook in NEXT:
        name, what = NEXT[notebook]
        text += f"\n\n**Next:** [`{name}`]({name}.ipynb) {what}."
    return text


def baseline(metrics: dict, history: pd.DataFrame) -> list[str]:
    """Notebook 01: accuracy, where validation peaked, the train/validation gap, the cost."""
    best = history.loc[history["val_acc"].idxmax()]
    last = history.iloc[-1]
    return [f"Test accuracy {metrics['test_acc']:.2f} % (loss {metrics['test_loss']:.3f}) after "
            f"{int(metrics['epochs'])} "
            f"epochs; validation peaked at {best.val_acc:.2f} % in epoch {int(best.epoch)}.",
            f"In the last epoch the training accuracy (on augmented images) was {last.train_acc:.2f} % against "
            f"{last.val_acc:.2f} % on validation ({last.train_acc - last.val_acc:+.1f} points, training minus "
            "validation).",
            f"{int(metrics['parameters']):,} parameters, {metrics['flops'] / 1e6:.1f} M FLOPs per image, "
            f"{metrics['size_MB']:.2f} MB; training took {metrics['train_minutes']:.1f} min at "
            f"{metrics['train_img_per_s']:.0f} images/s. The original report's 74.44 % came from ImageNet-pretrained "
            "VGG-16 at 64x64 (the `paper` profile), a different network: the two are not comparable."]


def relevance(bench: pd.DataFrame, corr: pd.DataFrame, target: float = 2.0) -> list[str]:
    """Notebook 02: what LRP costs against the gradient, and how alike the rankings are."""
    ratio = bench.set_index("criterion").loc[LRP, "x_gradient"]
    lines = [f"LRP scores take {ratio:.2f}x the time of the gradient criterion on the same images "
             f"(median of the benchmark; target at most {target:g}x: {'met' if ratio <= target else 'missed'})."]
    if LRP in corr.index:
        others = corr.loc[LRP].drop(LRP).sort_values()
        lines.append("Rank correlation of LRP's filter scores with the others: "
                     + ", ".join(f"{c} {v:.2f}" for c, v in others.items())
                     + f"; LRP ranks filters most like {others.index[-1]} and least like {others.index[0]}.")
    return lines


def unstructured(sweep: pd.DataFrame, storage: pd.DataFrame | None = None, max_drop: float = 1.0) -> list[str]:
    """Notebook 03: the highest sparsity each criterion reaches within 1 point, without fine-tuning."""
    sw = sweep[sweep["criterion"] != "lrp_zplus"]
    within = sw[sw["val_acc"] >= sw[sw["sparsity"] == 0]["val_acc"].max() - max_drop]
    reach = within.groupby("criterion")["sparsity"].max().sort_values(ascending=False)
    lines = ["Unstructured, without fine-tuning, the highest global sparsity within 1 point of the "
             "unpruned validation accuracy: " + ", ".join(f"{c} {s:.0%}" for c, s in reach.items()) + "."]
    if len(reach) > 1:
        lines.append(f"{reach.index[0]} goes furthest, {reach.index[-1]} least far"
                     + (f"; LRP is behind {', '.join(reach.index[:list(reach.index).index(LRP)])}."
                        if LRP in reach.index and reach.index[0] != LRP else "."))
    if storage is not None and len(storage):
        s = storage.iloc[0]
        lines.append(f"At {s.sparsity:.0%} sparsity, storing the weights as bitmask + values makes the file "
                     f"{s.ratio:.2f}x smaller ({s.dense_MB:.2f} -> {s.sparse_MB:.2f} MB) before any quantization.")
    return lines


def structured(alloc: pd.DataFrame, sweep: pd.DataFrame | None = None, max_drop: float = 1.0) -> list[str]:
    """Notebook 04: filter removal before fine-tuning, as pruned and recalibrated."""
    best = alloc.sort_values("val_acc_bn_recal", ascending=False).iloc[0]
    lines = [f"Filter removal at the report's filter count ({alloc['filters_removed'].mean():.0%} of filters): "
             f"before fine-tuning every criterion is near chance as pruned "
             f"(best {alloc['val_acc'].max():.1f} %); BatchNorm recalibration lifts the best to "
             f"{best.val_acc_bn_recal:.1f} % ({best.criterion}, {best.allocation})."]
    if sweep is not None and len(sweep):
        low = sweep[sweep["ratio"] == sweep["ratio"].min()]
        lines.append(f"At the smallest fraction swept ({low['ratio'].iloc[0]:.0%} of the filters, global allocation): "
                     + ", ".join(f"{r.criterion} {r.val_acc:.1f} % as pruned, {r.val_acc_bn_recal:.1f} % recalibrated"
                                 for r in low.itertuples()) + " (validation).")
    return lines


def quantization(targets: pd.DataFrame, results: pd.DataFrame | None = None) -> list[str]:
    """Notebook 07: what int8 changes against the float model, and the targets; with the
    ``results`` table of a compiled run, what the int8 kernels compute against the int8 graph."""
    qt = targets.set_index("against")
    lines = []
    for against in qt.index:
        r = qt.loc[against]
        missed = [k for k, v in (("accuracy", r.meets_accuracy), ("size", r.meets_size),
                                 ("latency", r.meets_latency)) if not v]
        lines.append(f"int8 static against {against}: test accuracy {-r.accuracy_drop:+.2f} points, file "
                     f"{r.size_ratio:.2f}x smaller, speed-up {r.latency_b1_speedup:.2f}x at batch 1 and "
                     f"{r.latency_b256_speedup:.2f}x at batch 256 (below 1: slower); targets missed: "
                     f"{', '.join(missed) or 'none'}.")
    if results is not None and "kernel_agreement" in results:
        k = results.dropna(subset=["kernel_agreement"]).set_index("variant")
        lines.append("int8 kernels (compiled) against the int8 reference graph they were lowered from, top-1 "
                     "agreement on the test split: " + ", ".join(
                         f"{v} {r.kernel_agreement:.2f} % ({int(r.activation_bits)}-bit activations)"
                         for v, r in k.iterrows()) + ". Activations are 7-bit where this CPU's int8 kernels "
                     "would overflow at 8 bits (no VNNI: `quantization.kernels_saturate`).")
    return lines
