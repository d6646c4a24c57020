"""Summaries over seeds: area under a curve, mean and spread, paired differences with intervals."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps


def auc(x, y) -> float:
    """Area under ``y(x)`` by the trapezoid rule, divided by the span of ``x``: the mean of
    ``y`` over the range (in ``y``'s unit). ``x`` need not be sorted; it needs two distinct values."""
    order = np.argsort(np.asarray(x, dtype=float))
    xs, ys = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order]
    if len(xs) < 2 or xs[-1] == xs[0]:
        raise ValueError(f"the area under a curve needs at least two distinct x values, got {list(xs)}")
    return float(np.trapezoid(ys, xs) / (xs[-1] - xs[0]))


def spread(df: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """n, mean and sample standard deviation (ddof 1; 0 when n is 1) of ``value`` per group."""
    g = df.groupby(by, sort=False, dropna=False)[value]
    out = g.agg(n="count", mean="mean", std="std").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def paired_difference(a, b, confidence: float = 0.95) -> dict:
    """Mean of ``a - b`` over pairs (same seed), its sample standard deviation and the
    Student-t interval at ``confidence``; ``resolved`` when the interval excludes 0. With one
    pair the interval is undefined (NaN) and nothing is resolved."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError("paired_difference needs two equally long, non-empty sequences")
    n, mean = len(d), float(d.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": float("nan"), "low": float("nan"), "high": float("nan"),
                "half_width": float("nan"), "resolved": False}
    std = float(d.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n))
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half,
            "half_width": half, "resolved": bool(mean - half > 0 or mean + half < 0)}


def seeds_needed(std: float, half_width: float = 0.5, confidence: float = 0.95) -> int:
    """Pairs needed for a t-interval of at most ``half_width`` given the paired differences'
    standard deviation ``std`` (the smallest n with t(n-1) std / sqrt(n) <= half_width)."""
    if not std > 0:
        return 2
    for n in range(2, 10_000):
        if sps.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n) <= half_width:
            return n
    return 10_000


def select_best(rows: pd.DataFrame, select: str = "val_acc") -> pd.Series:
    """The one rule by which the series picks a run: the row with the highest ``select``
    (validation accuracy) among the rows whose ``status`` is ``ok`` (a diverged run is never
    chosen); no other column is read. Raises ``ValueError`` when no row qualifies."""
    ok = rows[rows["status"] == "ok"]
    if ok.empty:
        raise ValueError(f"no finished run to choose from ({len(rows)} rows, none with status ok)")
    return ok.loc[ok[select].idxmax()]
