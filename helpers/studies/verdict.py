"""The series' answer to "is LRP the better criterion?", one row per regime, from saved tables.

Fine-tuned (notebook 06): at LRP's headline point on the compute and the size route, LRP against
the other criterion with the highest mean test accuracy there (the unpruned control aside), from
``headline_paired`` (paired by seed; Holm over that table). Without fine-tuning (notebook 05): in
every setting of the low-data study, LRP's better confirmed composite (by the screen's AUC)
against the strongest of weight, taylor and gradient (by the screen's AUC), from the
confirmation (bootstrap over seeds and images; Holm over that table). A verdict is *ahead* or
*behind* only where the difference survives the correction, *tied* otherwise.
"""
from __future__ import annotations

import pandas as pd

from ..core.vocabulary import COMPUTE, CONTROL, EPSILON_PLUS_FLAT, LRP, SIZE
from ..reporting import tables
from .lowdata import CONFIRMED_OTHERS, verdict

COLUMNS = ["setting", "lrp", "strongest_other", "difference", "low", "high", "p_holm", "verdict"]


def fine_tuned(head: pd.DataFrame, points: pd.DataFrame, paired: pd.DataFrame) -> list[dict]:
    """One row per route where LRP reached a headline point and another criterion ran there."""
    rows = []
    for route in (COMPUTE, SIZE):
        at = head[(head["route"] == route) & (head["criterion"] == LRP)]
        at = at.dropna(subset=["filters_removed_or_sparsity"])
        if at.empty:
            continue
        point, bits = at["filters_removed_or_sparsity"].iloc[0], at["weight_bits"].iloc[0]
        there = points[(points["route"] == route) & (points["point"] == point) & (points["weight_bits"] == bits)
                       & ~points["criterion"].isin([LRP, CONTROL])]
        if there.empty:
            continue
        other = there.loc[there["test_acc_mean"].idxmax(), "criterion"]
        d = paired[(paired["route"] == route) & (paired["point"] == point) & (paired["weight_bits"] == bits)
                   & (paired["criterion"] == other)].iloc[0]
        unit = "of the filters" if route == COMPUTE else f"sparsity, {int(bits)}-bit weights"
        rows.append({"setting": f"fine-tuned, {route} route ({point:g} {unit})", "lrp": f"{LRP} ({EPSILON_PLUS_FLAT})",
                     "strongest_other": other, "difference": d["mean"], "low": d["low"], "high": d["high"],
                     "p_holm": d["p_holm"], "verdict": verdict(d["mean"], bool(d["resolved_holm"]))})
    return rows


def without_fine_tuning(summary: pd.DataFrame, confirm: pd.DataFrame) -> list[dict]:
    """One row per setting of the low-data study's confirmation."""
    rows = []
    for (kind, bn, ref), g in confirm.groupby(["kind", "bn_recalibrated", "ref_per_class"], sort=False):
        s = summary[(summary["kind"] == kind) & (summary["bn_recalibrated"] == bn)
                    & (summary["ref_per_class"] == ref)].set_index("label")["auc_mean"]
        lrp = max(g["lrp"].unique(), key=lambda lab: s[lab])
        other = max([o for o in CONFIRMED_OTHERS if o in set(g["other"])], key=lambda lab: s[lab])
        d = g[(g["lrp"] == lrp) & (g["other"] == other)].iloc[0]
        where = "after BatchNorm recalibration" if bn else "as pruned"
        rows.append({"setting": f"no fine-tuning, {kind}, {where}, {ref}/class", "lrp": lrp,
                     "strongest_other": other, "difference": d["diff_mean"], "low": d["diff_low"],
                     "high": d["diff_high"], "p_holm": d["p_holm"], "verdict": d["verdict"]})
    return rows


def table(head, points, paired, summary, confirm) -> pd.DataFrame:
    """Every regime the series measured, fine-tuned first."""
    return pd.DataFrame(fine_tuned(head, points, paired) + without_fine_tuning(summary, confirm), columns=COLUMNS)


def section(verdicts: pd.DataFrame) -> str:
    """REPORT.md's opening section: the table and its counts in one sentence."""
    counts = verdicts["verdict"].value_counts()
    words = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("ahead", "tied", "behind"))
    return "\n".join([
        "## Is LRP the better criterion? Every regime measured", "",
        f"LRP against the strongest other criterion in each regime: {words} of {len(verdicts)}. Difference: "
        "test accuracy (fine-tuned) or the area under the accuracy curve on the confirmation images (no "
        "fine-tuning), points, with its 95 % interval read alone; the verdict is the difference's after Holm's "
        "correction over its table (`p_holm`): *tied* where it does not survive.", "",
        tables.markdown(verdicts), ""])
