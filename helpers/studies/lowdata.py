"""The low-data study of notebook 05: pruning with few reference images and no fine-tuning.

Yeom et al. (2021) claim LRP is clearly better than the classic criteria when only a few
reference images are at hand and the pruned network is not fine-tuned; Hatefi et al. (2024)
that the choice of LRP rules per layer decides most of LRP's quality. The study scores the
baseline with every criterion (LRP with every composite) on reference sets of a few sizes,
each drawn with several seeds, prunes it without fine-tuning (structured, global allocation;
unstructured, global) and measures validation accuracy as pruned and after BatchNorm
recalibration. A small search picks a per-depth rule assignment on one half of the
validation split; every criterion is compared on the other half; the test split is read once,
for the searched composite.

Reference images come from the training split (never the test split); their count per class
is bounded by the validation split's, the largest held-out set a user would have.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace

import pandas as pd
import torch
from torch import nn

from ..core import artifacts, checkpoint, config, progress, stats, vocabulary
from ..methods import composites, pruning
from ..reporting import tables
from ..methods.criteria import compute_scores, nested_scores
from ..core.data import Data, Split, batches, class_balanced_sample, stratified_split
from ..methods.scores import fingerprint
from ..methods.training import evaluate

OTHERS = vocabulary.OTHER_CRITERIA
SEED_FREE = ("weight",)          # one score set, whatever the seed and reference size
REF_FREE = ("weight", "random")  # independent of the reference images
SEARCH_START = composites.depth_name({g: ("epsilon", composites.EPSILON) for g in composites.GROUPS})
SEARCH_CANDIDATES = {  # rules tried per group, top group first (relevance flows top-down)
    "dense": (("epsilon", composites.EPSILON), ("epsilon", 0.25)),
    "high": (("epsilon", composites.EPSILON), ("epsilon", 0.25), ("gamma", 0.25), ("zplus", None)),
    "middle": (("epsilon", composites.EPSILON), ("epsilon", 0.25), ("gamma", 0.25), ("zplus", None)),
    "low": (("epsilon", composites.EPSILON), ("epsilon", 0.25), ("gamma", 0.25), ("zplus", None)),
}


class StudyError(ValueError):
    """A study setting that cannot be run (bad composite, criterion or reference size)."""


@dataclass(frozen=True)
class Study:
    """What the study runs: the grid (from the profile) and the criteria compared."""

    ref_sizes: tuple
    seeds: tuple
    fractions: tuple
    sparsities: tuple
    composites: tuple
    others: tuple
    eval_per_class: int
    recal_batches: int

    def key(self, model: nn.Module) -> str:
        """A short hash of the model and every setting: saved blocks are reused only by the same study."""
        text = json.dumps({**asdict(self), "model": fingerprint(model)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def make_study(p: config.Profile, composite_names: list[str], others: list[str]) -> Study:
    """The profile's grid with the composites and other criteria asked for, checked."""
    for c in composite_names:
        try:
            composites.check(c)
        except composites.CompositeError as e:
            raise StudyError(str(e)) from None
    bad = [o for o in others if o not in OTHERS]
    if bad:
        raise StudyError(f"unknown criterion {bad[0]!r}; valid: {', '.join(OTHERS)}")
    for r in p.lowdata_ref_sizes:
        check_ref_size(r, p.val_per_class)
    return Study(tuple(p.lowdata_ref_sizes), tuple(range(p.lowdata_seeds)), tuple(p.lowdata_fractions),
                 tuple(p.lowdata_sparsities), tuple(composite_names), tuple(others),
                 p.lowdata_eval_per_class, p.lowdata_recal_batches)


def check_ref_size(per_class, val_per_class: int) -> None:
    if isinstance(per_class, bool) or not isinstance(per_class, int) or not 1 <= per_class <= val_per_class:
        raise StudyError(f"reference size {per_class!r} images per class is not valid: use a whole "
                         f"number from 1 to {val_per_class} (the validation split's images per class)")


def reference(d: Data, per_class: int, seed: int, val_per_class: int) -> Split:
    """``per_class`` training images of every class, drawn with ``seed``. The same seed gives
    nested sets: the first ``k`` of one seeded order per class."""
    check_ref_size(per_class, val_per_class)
    return class_balanced_sample(d.train, per_class, seed)


def validation_halves(d: Data, p: config.Profile, per_class: int) -> tuple[Split, Split]:
    """Two disjoint, class-balanced subsets of the validation split, ``per_class`` images of
    every class each: the first scores the rule search, the second compares the criteria."""
    half = p.val_per_class // 2
    if not 1 <= per_class <= half:
        raise StudyError(f"lowdata_eval_per_class must lie in 1..{half} (half the validation split "
                         f"per class), got {per_class}")
    a, b = stratified_split(d.val.y, half, p.seed)
    search, compare = Split(d.val.x[a], d.val.y[a]), Split(d.val.x[b], d.val.y[b])
    return class_balanced_sample(search, per_class, p.seed), class_balanced_sample(compare, per_class, p.seed)


def recal_batches(d: Data, p: config.Profile, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` augmented training batches, drawn once: every BatchNorm recalibration sees the same."""
    g = torch.Generator().manual_seed(p.seed)
    it = batches(d.train, p.batch_size, p.input_size, shuffle=True, generator=g, train_augment=True)
    return [b for _, b in zip(range(n), it)]


# ----------------------------------------------------------------------------- measuring
def _accuracies(kind: str, fraction: float, pruned: nn.Module, ev: Split, recal: list, p) -> list[dict]:
    """Accuracy of ``pruned`` on ``ev`` as pruned and, when batches are given, after BatchNorm
    recalibration on them. The pruned copy runs channels-last (measured 25-40 % faster here
    on these fresh, small networks; the same model, its sums taken in another order)."""
    pruned = pruned.to(memory_format=torch.channels_last)
    rows = [{"kind": kind, "fraction": fraction, "bn_recalibrated": False,
             "val_acc": evaluate(pruned, ev, p.eval_batch_size, p.input_size)["acc"]}]
    if recal:
        pruning.recalibrate_batchnorm(pruned, iter(recal), len(recal))
        rows.append({**rows[0], "bn_recalibrated": True,
                     "val_acc": evaluate(pruned, ev, p.eval_batch_size, p.input_size)["acc"]})
    return rows


def curves(model: nn.Module, s: dict, ev: Split, recal: list, p: config.Profile,
           fractions, sparsities) -> list[dict]:
    """Accuracy without fine-tuning at every fraction of filters (global allocation) and every
    unstructured sparsity, pruned by scores ``s``."""
    rows = []
    for f in fractions:
        counts = pruning.allocation_counts(model, "global", s["filter"], f)
        rows += _accuracies("structured", f, pruning.prune_filters(model, s["filter"], counts, p.input_size),
                            ev, recal, p)
    for sp in sparsities:
        rows += _accuracies("unstructured", sp, pruning.unstructured_prune(model, s, sp), ev, recal, p)
    return rows


def _score(model, ref, criterion, composite, seed, p):
    return compute_scores(model, ref, criterion, composite=composite or "epsilon_plus_flat", seed=seed,
                          size=p.input_size)


def reference_chunks(d: Data, sizes, seed: int, val_per_class: int) -> list[Split]:
    """The reference sets of every size in ``sizes`` for one seed, as increments: the union of
    the first ``k`` chunks is ``reference(d, sizes[k-1], seed)`` (the same images)."""
    for r in sizes:
        check_ref_size(r, val_per_class)
    g = torch.Generator().manual_seed(seed)
    y = d.train.y
    orders = [torch.nonzero(y == c).flatten() for c in torch.unique(y)]
    orders = [idx[torch.randperm(len(idx), generator=g)] for idx in orders]  # as data.class_balanced_sample
    bounds = [0, *sizes]
    chunks = []
    for lo, hi in zip(bounds, bounds[1:]):
        idx = torch.cat([o[lo:hi] for o in orders])
        chunks.append(Split(d.train.x[idx], y[idx]))
    return chunks


def duplicates(names) -> dict[str, str]:
    """Composites whose scores equal an earlier one's (:func:`composites.same_scores`, e.g. a
    searched composite that is a stock one): name -> that earlier composite."""
    out = {}
    for i, c in enumerate(names):
        first = next((b for b in names[:i] if b not in out and composites.same_scores(b, c)), None)
        if first is not None:
            out[c] = first
    return out


def seed_scores(model, d: Data, study: Study, p, seed: int) -> list[tuple[int, dict]]:
    """(reference size, scores) of every score set of one seed: data-driven criteria on every
    reference size (one pass over the largest set each, :func:`criteria.nested_scores`), the
    random control once per seed and the data-free weight criterion for the first seed only.
    A composite with the same scores as an earlier one (:func:`duplicates`) is not scored."""
    chunks = reference_chunks(d, study.ref_sizes, seed, p.val_per_class)
    out, skip = [], duplicates(list(study.composites))
    data_driven = [("lrp", c) for c in study.composites if c not in skip] + \
        [(o, "") for o in study.others if o not in REF_FREE]
    for criterion, composite in data_driven:
        nested = nested_scores(model, chunks, criterion, composite=composite or "epsilon_plus_flat",
                               seed=seed, size=p.input_size)
        out += list(zip(study.ref_sizes, nested))
    for o in study.others:
        if o in REF_FREE and (o not in SEED_FREE or seed == study.seeds[0]):
            out.append((study.ref_sizes[0], compute_scores(model, chunks[0], o, seed=seed, size=p.input_size)))
    return out


def run_block(model, d: Data, study: Study, ev: Split, recal: list, p, seed: int) -> pd.DataFrame:
    """Every score set of one seed, then its accuracy curves; a duplicate composite's rows are
    its twin's (the same scores give the same pruned networks)."""
    rows = []
    for ref_size, s in seed_scores(model, d, study, p, seed):
        for r in curves(model, s, ev, recal, p, study.fractions, study.sparsities):
            rows.append({"criterion": s["criterion"], "composite": s["composite"], "ref_per_class": ref_size,
                         "seed": seed, "score_seconds": s["seconds"], **r})
    block = pd.DataFrame(rows)
    twins = [block[(block["criterion"] == "lrp") & (block["composite"] == b)].assign(composite=c)
             for c, b in duplicates(list(study.composites)).items()]
    return pd.concat([block, *twins], ignore_index=True)


def run(model: nn.Module, d: Data, study: Study, ev: Split, recal: list, p: config.Profile) -> pd.DataFrame:
    """The whole grid, one saved block per seed under ``artifacts/<profile>/lowdata/<key>/``: an
    interrupted run resumes where it stopped, and only a study with the same model and
    settings reuses a block. Reference-free criteria (weight, random) are measured once and
    repeated at every reference size."""
    folder = artifacts.lowdata(p).path / study.key(model)
    blocks = []
    for seed in progress.steps(study.seeds, "low-data study, seed"):
        path = folder / f"seed{seed}.csv"
        if not path.exists():
            block = run_block(model, d, study, ev, recal, p, seed)
            checkpoint.atomic_write(path, lambda tmp: block.to_csv(tmp, index=False))
        blocks.append(pd.read_csv(path, keep_default_na=False))
    return _repeat_reference_free(pd.concat(blocks, ignore_index=True), study)


def _repeat_reference_free(rows: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Rows of reference-free criteria copied to every reference size (seed-free ones to every seed)."""
    free = rows[rows["criterion"].isin(REF_FREE)]
    copies = [rows[~rows["criterion"].isin(REF_FREE)]]
    for r in study.ref_sizes:
        for s in study.seeds:
            part = free[(free["criterion"] == "random") & (free["seed"] == s)]
            if s == study.seeds[0]:
                part = pd.concat([part, free[free["criterion"].isin(SEED_FREE)]])
            copies.append(part.assign(ref_per_class=r))
    out = pd.concat(copies, ignore_index=True)
    out["label"] = [label(c, k) for c, k in zip(out["criterion"], out["composite"])]
    return out


def label(criterion: str, composite: str) -> str:
    """``lrp (epsilon)`` for LRP rows, the criterion's name otherwise."""
    if criterion != "lrp":
        return criterion
    return "lrp (searched)" if composite.startswith(composites.DEPTH_PREFIX) else f"lrp ({composite})"


# ----------------------------------------------------------------------------- rule search
def rule_search(model: nn.Module, d: Data, ev: Split, p: config.Profile, fractions, seeds,
                ref_size: int) -> tuple[str, pd.DataFrame]:
    """Per-depth rules chosen one group at a time (dense, high, middle, low), starting from
    LRP-epsilon everywhere: each candidate rule for the group is scored by the area under
    the structured accuracy curve (as pruned, on ``ev``, mean over ``seeds``), and the best is
    kept before moving to the next group. Returns the chosen composite and every candidate's score."""
    refs = [reference(d, ref_size, s, p.val_per_class) for s in seeds]
    seen: dict[str, float] = {}

    def score(name):
        if name not in seen:
            aucs = [stats.auc(fractions, [r["val_acc"] for r in curves(
                model, _score(model, ref, "lrp", name, s, p), ev, [], p, fractions, ())])
                for s, ref in zip(seeds, refs)]
            seen[name] = sum(aucs) / len(aucs)
        return seen[name]

    best = composites.parse_depth(SEARCH_START)
    for group in progress.steps(list(SEARCH_CANDIDATES), "rule search, group"):
        options = [{**best, group: rule} for rule in SEARCH_CANDIDATES[group]]
        best = max(options, key=lambda a: score(composites.depth_name(a)))
    table = pd.DataFrame([{"composite": n, "search_auc": a} for n, a in seen.items()])
    return composites.depth_name(best), table.sort_values("search_auc", ascending=False, ignore_index=True)


# ----------------------------------------------------------------------------- summaries
def auc_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Area under the accuracy-vs-fraction curve per (kind, recalibration, label, reference
    size, seed): the mean accuracy (%) over the swept range."""
    keys = ["kind", "bn_recalibrated", "label", "criterion", "composite", "ref_per_class", "seed"]
    return (rows.groupby(keys, sort=False)
            .apply(lambda g: stats.auc(g["fraction"], g["val_acc"]), include_groups=False)
            .rename("auc").reset_index())


def auc_summary(aucs: pd.DataFrame) -> pd.DataFrame:
    """n, mean and standard deviation of the AUC over seeds."""
    out = stats.spread(aucs, ["kind", "bn_recalibrated", "label", "ref_per_class"], "auc")
    return out.rename(columns={"mean": "auc_mean", "std": "auc_std", "n": "n_seeds"})


def paired(aucs: pd.DataFrame) -> pd.DataFrame:
    """Each LRP composite's AUC minus each other criterion's, paired by seed, with 95 % intervals
    (seed-free criteria are one number, paired with every seed)."""
    rows = []
    for (kind, bn, r), g in aucs.groupby(["kind", "bn_recalibrated", "ref_per_class"], sort=False):
        by = {lab: x.set_index("seed")["auc"] for lab, x in g.groupby("label")}
        for a in [lab for lab in by if lab.startswith("lrp")]:
            for b in [lab for lab in by if not lab.startswith("lrp")]:
                other = by[b].reindex(by[a].index, fill_value=by[b].iloc[0]) if len(by[b]) == 1 else by[b]
                common = by[a].index.intersection(other.index)
                d = stats.paired_difference(by[a][common], other[common])
                rows.append({"kind": kind, "bn_recalibrated": bn, "ref_per_class": r, "lrp": a, "other": b,
                             **{k: d[k] for k in ("n", "mean", "low", "high", "resolved")}})
    return pd.DataFrame(rows).rename(columns={"mean": "diff_mean", "low": "diff_low", "high": "diff_high"})


def lrp_for_conclusions(labels) -> str:
    """The LRP variant the conclusions speak for: the searched composite (chosen on the other
    validation half, so not selected on the numbers compared), else Yeom et al.'s default."""
    return "lrp (searched)" if "lrp (searched)" in set(labels) else "lrp (epsilon_plus_flat)"


def conclusions(summary: pd.DataFrame, pairs: pd.DataFrame) -> list[str]:
    """Sentences from the numbers: per kind and recalibration, at which reference sizes LRP
    (:func:`lrp_for_conclusions`) is ahead of the strongest other criterion (by mean AUC),
    by how much, and whether the paired interval resolves it."""
    lrp, out = lrp_for_conclusions(summary["label"]), []
    for (kind, bn), s in summary.groupby(["kind", "bn_recalibrated"], sort=False):
        where = "after BatchNorm recalibration" if bn else "as pruned"
        parts = []
        for r, g in s.groupby("ref_per_class"):
            oth = g[~g["label"].str.startswith("lrp")].sort_values("auc_mean").iloc[-1]["label"]
            d = pairs[(pairs["kind"] == kind) & (pairs["bn_recalibrated"] == bn) & (pairs["ref_per_class"] == r)
                      & (pairs["lrp"] == lrp) & (pairs["other"] == oth)].iloc[0]
            verdict = "resolved" if d["resolved"] else "not resolved"
            ahead = "ahead of" if d["diff_mean"] > 0 else "behind"
            parts.append(f"{r}/class: {ahead} {oth} by {d['diff_mean']:+.2f} points "
                         f"[{d['diff_low']:+.2f}, {d['diff_high']:+.2f}], {verdict}")
        out.append(f"**{kind}, {where}** — {lrp} against the strongest other criterion (AUC, paired by "
                   f"seed, 95 % interval): " + "; ".join(parts) + ".")
    return out


def relevance_timing(model: nn.Module, ref: Split, composite_names, p: config.Profile) -> pd.DataFrame:
    """Seconds for each composite's LRP scores against the gradient criterion's on the same
    images, measured side by side (``scores.benchmark``: five alternating runs, medians)."""
    from ..methods.scores import benchmark
    rows = []
    for c in composite_names:
        b = benchmark(model, ref, ("lrp", "gradient"), repeats=5, composite=c, size=p.input_size).set_index("criterion")
        rows.append({"composite": c, "images": len(ref), "lrp_s": b.loc["lrp", "median_seconds"],
                     "gradient_s": b.loc["gradient", "median_seconds"], "x_gradient": b.loc["lrp", "x_gradient"]})
    return pd.DataFrame(rows)


def test_auc(model: nn.Module, d: Data, composite: str, study: Study, ref_size: int, p) -> dict:
    """The searched composite's structured AUC on the test split (as pruned), over the study's
    seeds: the only time the study reads the test split."""
    aucs = []
    for seed in study.seeds:
        s = _score(model, reference(d, ref_size, seed, p.val_per_class), "lrp", composite, seed, p)
        acc = [r["val_acc"] for r in curves(model, s, d.test, [], p, study.fractions, ())]
        aucs.append(stats.auc(study.fractions, acc))
    t = torch.tensor(aucs, dtype=torch.float64)
    return {"composite": composite, "ref_per_class": ref_size, "n_seeds": len(aucs),
            "test_auc_mean": float(t.mean()), "test_auc_std": float(t.std()) if len(aucs) > 1 else 0.0}


class Timer:
    """Wall-clock seconds of named parts of the study, for its cost table."""

    def __init__(self):
        self.parts: dict[str, float] = {}

    def __call__(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.parts[name] = time.perf_counter() - start
        return out

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"part": k, "minutes": v / 60} for k, v in self.parts.items()]
                            + [{"part": "total", "minutes": sum(self.parts.values()) / 60}])


def with_composite(study: Study, composite: str) -> Study:
    """``study`` with one more LRP composite (the searched one) compared."""
    return replace(study, composites=(*study.composites, composite))


def findings_markdown(summary: pd.DataFrame, pairs: pd.DataFrame, searched: str, test: dict,
                      timing: pd.DataFrame, cost: pd.DataFrame) -> str:
    """The notebook's closing section, written from its own numbers."""
    slow = timing[timing["x_gradient"] > 2]
    lines = ["## What this shows", ""] + [f"- {c}" for c in conclusions(summary, pairs)] + [
        f"- The rule search (on the other validation half) chose `{searched}`; its structured AUC on the "
        f"test split, {test['ref_per_class']} image(s) per class, is {test['test_auc_mean']:.2f} "
        f"± {test['test_auc_std']:.2f} % over {test['n_seeds']} seeds (the only reading of the test split here).",
        "- LRP's cost on the same images as the gradient criterion: "
        + ", ".join(f"`{c}` {x:.2f}x" for c, x in zip(timing["composite"], timing["x_gradient"]))
        + (" — all within the 2x target." if slow.empty else
           f" — {len(slow)} composite(s) above the 2x target."),
        f"- The study took {cost.iloc[-1]['minutes']:.1f} minutes in this run.",
        "", "Next: `06_fine_tuning.ipynb` asks whether the differences survive fine-tuning."]
    return "\n".join(lines)


def auc_pivot(summary: pd.DataFrame, kind: str, bn: bool) -> pd.DataFrame:
    """AUC mean ± std (%) per criterion (rows) and reference size (columns)."""
    s = summary[(summary["kind"] == kind) & (summary["bn_recalibrated"] == bn)]
    cells = s.assign(auc=[f"{m:.2f} ± {d:.2f}" for m, d in zip(s["auc_mean"], s["auc_std"])])
    wide = cells.pivot_table(index="label", columns="ref_per_class", values="auc", aggfunc="first")
    wide.columns = [f"{c}/class" for c in wide.columns]
    return wide.reset_index().rename(columns={"label": "criterion"})


def report_section(summary: pd.DataFrame, pairs: pd.DataFrame, searched: str, test: dict,
                   timing: pd.DataFrame, cost: pd.DataFrame, baseline: dict) -> str:
    """The study's section of ``REPORT.md`` (and, through it, of the README); ``baseline`` is
    the metrics saved with the baseline model the study pruned."""
    n = int(summary["n_seeds"].max())
    lines = ["## Few reference images, no fine-tuning (notebook 05)", "",
             f"Pruned baseline: test accuracy {baseline['test_acc']:.2f} %, {int(baseline['parameters']):,} "
             f"parameters. AUC = mean validation accuracy (%) over the swept fractions, mean ± std over {n} seeds "
             "(reference images drawn from the training split; accuracy on a fixed half of the "
             "validation split). Full tables: `lowdata_auc.csv`, `lowdata_paired.csv`, `lowdata.csv`.", ""]
    lines += [f"- {c}" for c in conclusions(summary, pairs)] + [
        f"- Rule search (scored on the other validation half): `{searched}`; test-split AUC "
        f"(structured, as pruned, {test['ref_per_class']}/class): {test['test_auc_mean']:.2f} ± "
        f"{test['test_auc_std']:.2f} over {test['n_seeds']} seeds.",
        "- LRP time / gradient time on the same images: "
        + ", ".join(f"`{c}` {x:.2f}x" for c, x in zip(timing["composite"], timing["x_gradient"]))
        + f" (target ≤ 2x). The study took {cost.iloc[-1]['minutes']:.1f} minutes.", ""]
    for kind in ("structured", "unstructured"):
        for bn in (False, True):
            if ((summary["kind"] == kind) & (summary["bn_recalibrated"] == bn)).any():
                where = "after BatchNorm recalibration" if bn else "as pruned"
                lines += [f"**{kind}, {where}**", "", tables.markdown(auc_pivot(summary, kind, bn)), ""]
    lines += ["![AUC against reference images per class](lowdata_auc.png)", "",
              "![accuracy against the fraction of filters removed](lowdata_structured.png)", ""]
    return "\n".join(lines)
