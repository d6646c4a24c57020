"""The headline: the largest compression each criterion reaches within 1 point of the baseline.

Per route and criterion, the point (fraction of filters removed, or sparsity) is the largest
one whose **validation** accuracy, averaged over seeds, is at most ``max_drop`` points below
the baseline's validation accuracy; the table then reports the **test** accuracy at that point
(n, mean, standard deviation) and its drop against the baseline's test accuracy. LRP against
every other criterion: the paired difference in test accuracy (paired by seed) with its 95 %
Student-t interval, at every point both ran, and its p-value after Holm's correction over the
whole table (the family the prose reads): a difference is called resolved only when that survives.
"""
from __future__ import annotations

import pandas as pd
from IPython.display import Markdown

from ..core import stats
from ..core.vocabulary import COMBINED, COMPUTE, CONTROL, LRP, SIZE, STATUSES
from ..reporting import tables
from ..reporting.findings import within

COLUMNS = ["route", "criterion", "n_seeds", "filters_removed_or_sparsity", "weight_bits", "compression_x", "flops_x",
           "test_acc_mean", "test_acc_std", "drop_points", "val_acc_mean"]
POINT = ["point", "weight_bits"]
"""What one point of a route is: the fraction of filters or the sparsity, and the weight grid
(32: float32; 8: int8; fewer: int8 weights on a narrower grid, size and combined routes)."""
SCHEDULE_COLUMNS = ["criterion", "fraction", "n", "oneshot_test", "iterative_test", "iterative_minus_oneshot", "low",
                    "high", "resolved", "p", "p_holm", "resolved_holm", "oneshot_params", "iterative_params",
                    "oneshot_flops", "iterative_flops"]
PAIRED_COLUMNS = ["route", "point", "weight_bits", "criterion", "n", "mean", "std", "low", "high", "half_width",
                  "resolved", "p", "seeds_needed", "p_holm", "resolved_holm"]
TARGETS = {SIZE: 12.0, COMPUTE: 2.5}   # compression within 1 point (file size; parameters)
FLOPS_TARGET = 1.5                           # compute route: FLOPs reduction within 1 point


ROUTE_MEANS = {COMPUTE: (["criterion", "point"], ["val_acc", "test_acc", "compression_x", "flops_x"]),
               SIZE: (["criterion", "point", "weight_bits"],
                        ["val_acc", "test_acc", "compression_x", "compression_x_uncompressed"])}
"""What notebook 06 shows of a route's runs: the keys and the columns averaged over seeds."""


def route_means(runs: list[pd.DataFrame], route: str) -> Markdown:
    """Notebook 06's table of one route: :data:`ROUTE_MEANS` of its runs, mean over seeds; a line
    saying so when the route was not run."""
    rows = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame(columns=["route"])
    rows = rows[rows["route"] == route]
    if rows.empty:
        return Markdown(f"{route} route not run")
    keys, columns = ROUTE_MEANS[route]
    return tables.show(rows.groupby(keys)[columns].mean(), "mean over seeds")


def finished(rows: pd.DataFrame) -> pd.DataFrame:
    """The runs that did not diverge (a diverged run is never a result). Every row names its
    ``weight_bits`` (:func:`helpers.studies.routes.run` writes it; the committed tables were
    rewritten with it), so no reader fills it in."""
    return rows[rows["status"] == "ok"]


def table(rows: pd.DataFrame, baseline_val: float, baseline_test: float, max_drop: float = 1.0) -> pd.DataFrame:
    """One row per route and criterion (the control ``none`` excluded): the headline point, the
    (point, weight grid) of largest mean compression whose mean validation accuracy is at most
    ``max_drop`` below the baseline's, with test accuracy (n, mean, std) and compression read there."""
    ok = finished(rows)
    ok = ok[ok["criterion"] != CONTROL]
    keys = ["route", "criterion", *POINT]
    means = ok.groupby(keys, as_index=False, sort=False)[["val_acc", "compression_x", "flops_x"]].mean()
    within = means[means["val_acc"] >= baseline_val - max_drop]
    at = within.loc[within.groupby(["route", "criterion"], sort=False)["compression_x"].idxmax()]
    test = stats.spread(ok, keys, "test_acc").rename(columns={"mean": "test_acc_mean", "std": "test_acc_std",
                                                               "n": "n_seeds"})
    out = means[["route", "criterion"]].drop_duplicates().merge(
        at.rename(columns={"val_acc": "val_acc_mean"}).merge(test, on=keys), on=["route", "criterion"], how="left")
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    out = out.rename(columns={"point": "filters_removed_or_sparsity"})
    out["drop_points"] = baseline_test - out["test_acc_mean"]
    return out.reindex(columns=COLUMNS)


def paired(rows: pd.DataFrame, reference: str = LRP, confidence: float = 0.95) -> pd.DataFrame:
    """``reference`` minus each other criterion, test accuracy, paired by seed, at every route
    and point where both finished; the seeds a ±0.5-point interval would need; the t-test's p
    and its Holm adjustment over every row (:func:`stats.with_holm`)."""
    ok = finished(rows)
    out = []
    for (route, point, bits), g in ok.groupby(["route", *POINT], sort=False):
        wide = g.pivot_table(index="seed", columns="criterion", values="test_acc")
        if reference not in wide:
            continue
        for other in [c for c in wide.columns if c not in (reference, CONTROL)]:
            both = wide[[reference, other]].dropna()
            if len(both) == 0:
                continue
            d = stats.paired_difference(both[reference], both[other], confidence)
            out.append({"route": route, "point": point, "weight_bits": bits, "criterion": other, **d,
                        "seeds_needed": stats.seeds_needed(d["std"]) if len(both) > 1 else float("nan")})
    return stats.with_holm(pd.DataFrame(out, columns=PAIRED_COLUMNS[:-2]))


def per_point(rows: pd.DataFrame) -> pd.DataFrame:
    """n, mean and standard deviation of validation and test accuracy, and mean compression,
    at every route, criterion and point (the figure's data)."""
    ok = finished(rows)
    keys = ["route", "criterion", *POINT]
    test = stats.spread(ok, keys, "test_acc").rename(columns={"mean": "test_acc_mean", "std": "test_acc_std"})
    rest = ok.groupby(keys, as_index=False, sort=False)[["val_acc", "compression_x", "flops_x"]].mean()
    return test.merge(rest, on=keys)


def findings(head: pd.DataFrame, pairs: pd.DataFrame, recipe: dict, rows: pd.DataFrame,
             baseline_test: float, max_drop: float = 1.0) -> list[str]:
    """The sentences REPORT.md states about the headline, from the tables (``head`` made with
    ``max_drop``)."""
    lines = [f"Every fine-tuned run uses one recipe, chosen on validation: peak learning rate "
             f"{recipe['lr']:g}, " + (f"knowledge distillation weight {recipe['kd_alpha']:g}."
                                      if recipe["kd_alpha"] else "labels only (no distillation).")]
    runs = rows[rows["weight_bits"] >= 8] if "weight_bits" in rows else rows  # narrower grids: the same runs
    bad = runs[runs["status"] != "ok"]
    lines.append(f"{len(runs)} runs, {len(bad)} diverged or collapsed (excluded: "
                 + (", ".join(f"{r.route} {r.criterion} {r.point:g} seed {r.seed}" for r in bad.itertuples())
                    or "none") + ").")
    for route, target in TARGETS.items():
        lines.append(_route_sentence(head[head["route"] == route], route, target, max_drop))
    lines += _combined_sentence(rows, head, baseline_test, max_drop)
    lines += _pair_sentences(pairs, head)
    return lines


def _combined_sentence(rows: pd.DataFrame, head: pd.DataFrame, baseline_test: float,
                       max_drop: float = 1.0) -> list[str]:
    """What the combined route reached, whether or not it stays within ``max_drop`` (the
    headline table only holds the points that do)."""
    ok = finished(rows[rows["route"] == COMBINED]) if "route" in rows else rows.iloc[:0]
    if ok.empty:
        return []
    kept = {tuple(r) for r in head[(head["route"] == COMBINED)].dropna(subset=["compression_x"])[
        ["criterion", "filters_removed_or_sparsity", "weight_bits"]].itertuples(index=False)}
    parts = [f"{name} ({f:.0%} of the filters, then {sp:.0%} of the weights, {grid(bits)}): "
             f"{g['compression_x'].mean():.2f}x smaller file and {g['flops_x'].mean():.2f}x fewer FLOPs, test "
             f"{g['test_acc'].mean():.2f} ± {g['test_acc'].std():.2f} % (n={len(g)}, drop "
             f"{baseline_test - g['test_acc'].mean():.2f} points), "
             f"{'' if (name, sp, bits) in kept else 'not '}{within(max_drop)} on validation"
             for (name, f, sp, bits), g in ok.groupby(["criterion", "fraction", *POINT])]
    return ["combined route (the compute route's network, then the size route on top): " + "; ".join(parts) + "."]


def _route_sentence(h: pd.DataFrame, route: str, target: float, max_drop: float = 1.0) -> str:
    unit = "smaller file" if route != COMPUTE else "fewer parameters"
    reached = h.dropna(subset=["compression_x"])
    if reached.empty:
        return f"{route} route: no criterion stays {within(max_drop)} at any point tried (target {target:g}x)."
    best = reached.loc[reached["compression_x"].idxmax()]
    met = best["compression_x"] >= target and (route != COMPUTE or best["flops_x"] >= FLOPS_TARGET)
    extra = f" and {best['flops_x']:.2f}x fewer FLOPs (target {FLOPS_TARGET}x)" if route == COMPUTE else ""
    at = "" if route == COMPUTE else f", {grid(best['weight_bits'])}"
    return (f"{route} route: the largest compression {within(max_drop)} is {best['criterion']}'s "
            f"{best['compression_x']:.2f}x {unit}{extra} at {best['filters_removed_or_sparsity']:g}{at}, test "
            f"{best['test_acc_mean']:.2f} ± {best['test_acc_std']:.2f} % (n={int(best['n_seeds'])}, drop "
            f"{best['drop_points']:.2f} points); target {target:g}x: {'met' if met else 'missed'}.")


def grid(bits: float) -> str:
    """The weight grid in words: ``int8 weights`` or ``6-bit weights (int8 storage)``."""
    return "int8 weights" if bits == 8 else f"{int(bits)}-bit weights (int8 storage)"


def _at(r) -> str:
    """A point in words: ``0.7``, or ``0.7 (6-bit)`` on a narrower weight grid."""
    bits = getattr(r, "weight_bits", 32)
    return f"{r.point:g}" + (f" ({int(bits)}-bit)" if bits < 8 else "")


def _pair_sentences(pairs: pd.DataFrame, head: pd.DataFrame) -> list[str]:
    if pairs.empty:
        return ["No paired comparison: LRP did not finish beside another criterion."]
    lines = []
    for route, g in pairs.groupby("route", sort=False):
        lines.append(f"{route} route, LRP minus each criterion (test accuracy, paired by seed, 95 % interval): "
                     + "; ".join(f"{r.criterion} at {_at(r)}: {r.mean:+.2f} [{r.low:+.2f}, {r.high:+.2f}]"
                                 for r in g.itertuples()) + ". " + _resolved_words(g, len(pairs)))
        wide = g[g["half_width"] > 0.5]
        if len(wide):
            lines.append(f"{route} route: intervals wider than ±0.5 points would need about "
                         + ", ".join(f"{int(r.seeds_needed)} seeds ({r.criterion} at {_at(r)})"
                                     for r in wide.itertuples()) + ".")
    return lines


def _resolved_words(g: pd.DataFrame, family: int) -> str:
    """Which differences are resolved after Holm's correction over ``family`` comparisons, and
    which only read alone (95 % interval excluding zero) and so are not."""
    held = g[g["resolved_holm"].astype(bool)]
    alone = g[g["resolved"].astype(bool) & ~g["resolved_holm"].astype(bool)]
    out = (f"Resolved after Holm's correction over the {family} comparisons: "
           + (", ".join(f"{r.criterion} at {_at(r)}" for r in held.itertuples()) or "none") + ".")
    if len(alone):
        out += (" Resolved read alone but not after the correction: "
                + ", ".join(f"{r.criterion} at {_at(r)} (adjusted p {r.p_holm:.2f})" for r in alone.itertuples()) + ".")
    return out


def section(head: pd.DataFrame, pairs: pd.DataFrame, lines: list[str], base: dict, p) -> str:
    """REPORT.md's headline section (notebook 06 writes it; the README block leads with it)."""
    cols = ["route", "point", "weight_bits", "criterion", "n", "mean", "low", "high", "resolved", "p_holm",
            "resolved_holm", "seeds_needed"]
    return "\n".join([
        f"## Headline: the largest compression {within(p.headline_max_drop)} of the baseline", "",
        f"Baseline {p.arch} (width {p.width:g}): test accuracy {base['test_acc']:.2f} %, "
        f"{int(base['parameters']):,} parameters, {base['size_MB']:.2f} MB. Every fine-tuned run: "
        f"{p.finetune_epochs:g} epochs of optimizer steps with the recipe chosen on validation; "
        f"{p.seeds} seeds per point" + seeds_note(p) + ". The point is located on validation accuracy "
        "(mean over seeds), the table reports test accuracy there. Compression: file size (int8, sparse, "
        "LZMA) on the size and combined routes, parameters on the compute route. Every size and combined "
        f"run is measured on each weight grid of {tuple(p.weight_bits)} bits (int8 storage and kernels; "
        "`weight_bits`: 8 is the full int8 range, 32 float32); its point is a sparsity and a grid. "
        f"A dash: no point tried stays {within(p.headline_max_drop)}.",
        "", tables.markdown(head), "",
        "![accuracy against compression, per route](headline.png)", "",
        "LRP minus each criterion, test accuracy, paired by seed (95 % interval, read alone; `p_holm`: the "
        "p-value after Holm's correction over every row, which decides `resolved_holm`):", "",
        tables.markdown(pairs.reindex(columns=cols)) if len(pairs) else "(none)", "",
        *[f"- {line}" for line in lines]])


def common_fraction(head: pd.DataFrame, fractions: tuple, reference: str = LRP) -> float:
    """The compute route's headline fraction: ``reference``'s, else the largest any criterion
    reaches in the headline table, else the smallest fraction tried."""
    c = head[(head["route"] == COMPUTE)].dropna(subset=["filters_removed_or_sparsity"]).set_index("criterion")
    if reference in c.index:
        return float(c.loc[reference, "filters_removed_or_sparsity"])
    return float(c["filters_removed_or_sparsity"].max()) if len(c) else float(min(fractions))


def schedules(rows: pd.DataFrame, iterative: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Iterative minus one-shot (the compute route's run at ``fraction``), test accuracy paired
    by seed, per criterion, with both schedules' mean accuracy, parameters and FLOPs; a criterion
    with no finished pair keeps its row, with ``n`` 0 and no numbers."""
    one = finished(rows)
    one = one[(one["route"] == COMPUTE) & (one["point"] == fraction)].set_index(["criterion", "seed"])
    it = finished(iterative).set_index(["criterion", "seed"])
    out = []
    for name in iterative["criterion"].unique():
        both = it.loc[[name]].join(one.loc[[name]] if name in one.index else one.iloc[:0], how="inner",
                                   lsuffix="_it", rsuffix="_one") if name in it.index else it.iloc[:0]
        if both.empty:
            out.append({"criterion": name, "fraction": fraction, "n": 0})
            continue
        d = stats.paired_difference(both["test_acc_it"], both["test_acc_one"])
        out.append({"criterion": name, "fraction": fraction, "n": d["n"],
                    "oneshot_test": both["test_acc_one"].mean(), "iterative_test": both["test_acc_it"].mean(),
                    "iterative_minus_oneshot": d["mean"], "low": d["low"], "high": d["high"],
                    "resolved": d["resolved"], "p": d["p"], "oneshot_params": both["parameters_one"].mean(),
                    "iterative_params": both["parameters_it"].mean(), "oneshot_flops": both["flops_one"].mean(),
                    "iterative_flops": both["flops_it"].mean()})
    table = pd.DataFrame(out, columns=SCHEDULE_COLUMNS).drop(columns=["p_holm", "resolved_holm"])
    return stats.with_holm(table).reindex(columns=SCHEDULE_COLUMNS)


def schedules_sentence(table: pd.DataFrame, steps: int, n_steps: int) -> str:
    """What the one-shot/iterative comparison shows, and the two differences that explain it:
    how the budget is spent and which network each schedule ends with."""
    done = table[table["n"] > 0]
    if done.empty:
        return "One-shot against iterative: no pair finished."
    parts = "; ".join(f"{r.criterion} {r.iterative_minus_oneshot:+.2f} [{r.low:+.2f}, {r.high:+.2f}]"
                      if r.n > 0 else f"{r.criterion} no pair finished" for r in table.itertuples())
    won = done[done["resolved_holm"].astype(bool)]
    wins = ", ".join(f"{r.criterion} ({'iterative' if r.iterative_minus_oneshot > 0 else 'one-shot'})"
                     for r in won.itertuples()) or "none"
    params = "; ".join(f"{r.criterion} {r.iterative_params / r.oneshot_params:.2f}x the parameters and "
                       f"{r.iterative_flops / r.oneshot_flops:.2f}x the FLOPs" for r in done.itertuples())
    return (f"One-shot against iterative at {table['fraction'].iloc[0]:.0%} of the filters, equal budget "
            f"({steps} optimizer steps; iterative spends them in {n_steps} rounds of about {steps // n_steps}, "
            f"rescoring before each, so the last network it ends with gets only that share): iterative minus one-shot, "
            f"test accuracy, paired by seed (95 % interval): {parts}. Resolved after Holm's correction over "
            f"{len(done)} criteria: {wins}. The iterative networks keep "
            f"{params} of the one-shot ones (rescoring after each round moves the allocation between layers).")


def status_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Runs per route, criterion, point and weight grid, by status (a column for each of
    :data:`STATUSES`, zero where none)."""
    keys = ["route", "criterion", *POINT]
    return rows.groupby(keys)["status"].value_counts().unstack(fill_value=0).reindex(columns=STATUSES, fill_value=0)


def report_point_sentence(results: pd.DataFrame, base_test: float) -> str:
    """The secondary table in one sentence: test accuracy per criterion at the report's own
    allocation (the same architecture for every criterion), mean ± std over seeds."""
    ok = results[results["status"] == "ok"] if len(results) else results
    if ok.empty:
        return "The report's operating point: no run finished."
    g = ok.groupby("criterion")["test_acc"].agg(["mean", "std", "count"]).sort_values("mean", ascending=False)
    parts = ", ".join(f"{c} {r['mean']:.2f} ± {r['std']:.2f}" for c, r in g.iterrows())
    drop = base_test - g["mean"].iloc[0]
    verdict = ("far outside 1 point: the allocation made for a 138 M-parameter model does not transfer"
               if drop > 1 else "within 1 point")
    failed = len(results) - len(ok)
    return (f"At the report's operating point ({ok['filters_removed'].mean():.0%} of the filters removed, the same "
            f"network for every criterion, {int(g['count'].min())} seeds), test accuracy after fine-tuning: {parts} %; "
            f"the best is {drop:.2f} points below the baseline's {base_test:.2f} %, {verdict}"
            + (f"; {failed} runs diverged and are not in these means." if failed else "."))


def seeds_note(p) -> str:
    """Where a route runs more seeds than ``p.seeds``, e.g. `` (5 on the compute route)``."""
    more = [f"{n} on the {route} route" for route, n in ((COMPUTE, p.compute_seeds), (SIZE, p.size_seeds))
            if n and n != p.seeds]
    return f" ({', '.join(more)})" if more else ""
