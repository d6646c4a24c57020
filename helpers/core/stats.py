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
    """Mean of ``a - b`` over pairs (same seed), its sample standard deviation, the Student-t
    interval at ``confidence`` and the two-sided paired t-test's ``p``; ``resolved`` when the
    interval excludes 0 (one comparison read alone: see :func:`holm` for a family). With one
    pair the interval and ``p`` are undefined (NaN) and nothing is resolved."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError("paired_difference needs two equally long, non-empty sequences")
    n, mean = len(d), float(d.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": float("nan"), "low": float("nan"), "high": float("nan"),
                "half_width": float("nan"), "resolved": False, "p": float("nan")}
    std = float(d.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n))
    p = float(2 * sps.t.sf(abs(mean) / (std / np.sqrt(n)), n - 1)) if std > 0 else float(mean == 0)
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half,
            "half_width": half, "resolved": bool(mean - half > 0 or mean + half < 0), "p": p}


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


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (family-wise error control): the
    i-th smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j)). NaN entries (no
    test) stay NaN and do not count in m. A comparison survives at level a when its adjusted
    p is below a."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def with_holm(table: pd.DataFrame, p_column: str = "p", alpha: float = 0.05) -> pd.DataFrame:
    """``table`` with ``p_holm`` (:func:`holm` over all its rows: the family) and
    ``resolved_holm`` (adjusted p below ``alpha``)."""
    adjusted = holm(table[p_column]) if len(table) else np.array([])
    return table.assign(p_holm=adjusted, resolved_holm=adjusted < alpha)


def two_way_bootstrap(diffs, n_boot: int = 4000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Mean of a (seeds, images) matrix of paired differences, with a bootstrap over seeds and
    images together: each replicate redraws the seeds and, independently, the images (the same
    images for every seed, as they were scored), with replacement. Returns n_seeds, n_images,
    mean, the percentile interval at ``confidence``, the bootstrap standard error ``se`` and a
    two-sided ``p`` from the normal approximation mean / se; ``resolved`` when the interval
    excludes 0."""
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"two_way_bootstrap needs a non-empty (seeds, images) matrix, got shape {d.shape}")
    s, n = d.shape
    rng = np.random.default_rng(seed)
    seed_w = rng.multinomial(s, np.full(s, 1 / s), size=n_boot) / s      # (B, S) weights of the redrawn seeds
    image_w = rng.multinomial(n, np.full(n, 1 / n), size=n_boot) / n     # (B, N) weights of the redrawn images
    reps = np.einsum("bs,sn,bn->b", seed_w, d, image_w)
    mean, se = float(d.mean()), float(reps.std(ddof=1))
    low, high = np.quantile(reps, [0.5 - confidence / 2, 0.5 + confidence / 2])
    p = float(2 * sps.norm.sf(abs(mean) / se)) if se > 0 else float(mean == 0)
    return {"n_seeds": s, "n_images": n, "mean": mean, "low": float(low), "high": float(high), "se": se,
            "p": p, "resolved": bool(low > 0 or high < 0)}
