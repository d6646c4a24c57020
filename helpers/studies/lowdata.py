"""The low-data study of notebook 05: pruning with few reference images and no fine-tuning.

Yeom et al. (2021) claim LRP is clearly better than the classic criteria when only a few
reference images are at hand and the pruned network is not fine-tuned; Hatefi et al. (2024)
that the choice of LRP rules per layer decides most of LRP's quality. The study scores the
baseline with every criterion (LRP with every composite) on reference sets of a few sizes,
each drawn with several seeds, prunes it without fine-tuning (structured, global allocation;
unstructured, global) and measures validation accuracy as pruned and after BatchNorm
recalibration. A small search picks a per-depth rule assignment on one half of the
validation split; every criterion is compared on a screen of the other half, and every pruned
network is scored again on a larger, disjoint set of that half (the confirmation: per-image
hits, so its intervals carry the images' sampling error as well as the seeds'); the test split
is read once, for the searched composite.

Reference images come from the training split (never the test split); their count per class
is bounded by the validation split's, the largest held-out set a user would have.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core import artifacts, checkpoint, config, progress, stats, vocabulary
from ..methods import composites, pruning
from ..reporting import tables
from ..methods.criteria import compute_scores, nested_scores
from ..core.data import Data, Split, batches, class_balanced_sample, stratified_split
from ..core.models import has_batchnorm
from ..methods.scores import fingerprint
from ..methods.training import evaluate, hits
from ..core.vocabulary import EPSILON_PLUS_FLAT, GLOBAL, GRADIENT, LRP, RANDOM, TAYLOR, WEIGHT

OTHERS = vocabulary.OTHER_CRITERIA
SEED_FREE = (WEIGHT,)        # one score set, whatever the seed and reference size
REF_FREE = (WEIGHT, RANDOM)  # independent of the reference images
SEARCHED = f"{LRP} (searched)"
"""The label of the searched composite's rows."""
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
    confirm_per_class: int = 0

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
        check_ref_size(r, p.held_out_per_class)
    return Study(tuple(p.lowdata_ref_sizes), tuple(range(p.lowdata_seeds)), tuple(p.lowdata_fractions),
                 tuple(p.lowdata_sparsities), tuple(composite_names), tuple(others),
                 p.lowdata_eval_per_class, p.lowdata_recal_batches, p.lowdata_confirm_per_class)


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
    half = p.held_out_per_class // 2
    if not 1 <= per_class <= half:
        raise StudyError(f"lowdata_eval_per_class must lie in 1..{half} (half the validation split "
                         f"per class), got {per_class}")
    a, b = stratified_split(d.val.y, half, p.seed)
    search, compare = Split(d.val.x[a], d.val.y[a]), Split(d.val.x[b], d.val.y[b])
    return class_balanced_sample(search, per_class, p.seed), class_balanced_sample(compare, per_class, p.seed)


def confirmation_split(d: Data, p: config.Profile) -> Split | None:
    """``p.lowdata_confirm_per_class`` images of every class from the comparison half of the
    validation split, none of them in the screen (:func:`validation_halves`' second set); None
    when the profile asks for no confirmation."""
    n, screen, half = p.lowdata_confirm_per_class, p.lowdata_eval_per_class, p.held_out_per_class // 2
    if n == 0:
        return None
    if not 1 <= n <= half - screen:
        raise StudyError(f"lowdata_confirm_per_class must lie in 0..{half - screen} (the comparison half's "
                         f"{half} images per class less the screen's {screen}), got {n}")
    _, b = stratified_split(d.val.y, half, p.seed)
    compare = Split(d.val.x[b], d.val.y[b])
    rest, _ = stratified_split(compare.y, screen, p.seed)  # the held-out part is the screen's draw
    return class_balanced_sample(Split(compare.x[rest], compare.y[rest]), n, p.seed)


def recal_batches(d: Data, p: config.Profile, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` augmented training batches, drawn once: every BatchNorm recalibration sees the same."""
    g = torch.Generator().manual_seed(p.seed)
    it = batches(d.train, p.batch_size, p.input_size, shuffle=True, generator=g, train_augment=True)
    return [b for _, b in zip(range(n), it)]


# ----------------------------------------------------------------------------- measuring
def _accuracies(kind: str, fraction: float, pruned: nn.Module, ev: Split, recal: list, p,
                confirm: Split | None = None) -> list[dict]:
    """Accuracy of ``pruned`` on ``ev`` as pruned and, when batches are given, after BatchNorm
    recalibration on them; with ``confirm``, also its accuracy there and which of its images it
    got right (``confirm_hits``, :func:`pack_hits`). The pruned copy runs channels-last
    (measured 25-40 % faster here on these fresh, small networks; the same model, its sums
    taken in another order)."""
    pruned = pruned.to(memory_format=torch.channels_last)

    def measure(bn: bool) -> dict:
        row = {"kind": kind, "fraction": fraction, "bn_recalibrated": bn,
               "val_acc": evaluate(pruned, ev, p.eval_batch_size, p.input_size)["acc"]}
        if confirm is not None:
            start = time.perf_counter()
            right = hits(pruned, confirm, p.eval_batch_size, p.input_size)
            row.update(confirm_acc=100.0 * float(right.float().mean()), confirm_hits=pack_hits(right),
                       confirm_s=time.perf_counter() - start)
        return row

    rows = [measure(False)]
    if recal and has_batchnorm(pruned):
        pruning.recalibrate_batchnorm(pruned, iter(recal), len(recal))
        rows.append(measure(True))
    elif recal:  # no BatchNorm (torchvision VGG-16): recalibration changes nothing, nor do the numbers
        rows.append({**rows[0], "bn_recalibrated": True, **({"confirm_s": 0.0} if confirm is not None else {})})
    return rows


def pack_hits(right: torch.Tensor) -> str:
    """A bool vector as hexadecimal text, eight images to a byte (kept in a CSV cell)."""
    return np.packbits(right.numpy().astype(bool)).tobytes().hex()


def unpack_hits(text: str, n: int) -> np.ndarray:
    """Inverse of :func:`pack_hits` for a vector of ``n`` images."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n].astype(bool)


def curves(model: nn.Module, s: dict, ev: Split, recal: list, p: config.Profile,
           fractions, sparsities, confirm: Split | None = None) -> list[dict]:
    """Accuracy without fine-tuning at every fraction of filters (global allocation) and every
    unstructured sparsity, pruned by scores ``s`` (and on ``confirm`` too, when given)."""
    rows = []
    for f in fractions:
        counts = pruning.allocation_counts(model, GLOBAL, s["filter"], f)
        rows += _accuracies("structured", f, pruning.prune_filters(model, s["filter"], counts, p.input_size),
                            ev, recal, p, confirm)
    for sp in sparsities:
        rows += _accuracies("unstructured", sp, pruning.unstructured_prune(model, s, sp), ev, recal, p, confirm)
    return rows


def _score(model, ref, criterion, composite, seed, p):
    return compute_scores(model, ref, criterion, composite=composite or EPSILON_PLUS_FLAT, seed=seed,
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


def seed_scores(model, d: Data, study: Study, p, seed: int):
    """(reference size, scores) of every score set of one seed, one criterion at a time (a
    generator: the sets of one criterion are in memory, never all of them; a score set of the
    paper model holds 0.54 GB): data-driven criteria on every reference size (one pass over the
    largest set each, :func:`criteria.nested_scores`), the random control once per seed and the
    data-free weight criterion for the first seed only. A composite with the same scores as an
    earlier one (:func:`duplicates`) is not scored."""
    chunks = reference_chunks(d, study.ref_sizes, seed, p.held_out_per_class)
    skip = duplicates(list(study.composites))
    data_driven = [(LRP, c) for c in study.composites if c not in skip] + \
        [(o, "") for o in study.others if o not in REF_FREE]
    for criterion, composite in data_driven:
        nested = nested_scores(model, chunks, criterion, composite=composite or EPSILON_PLUS_FLAT,
                               seed=seed, size=p.input_size)
        for size in study.ref_sizes:  # handed on one by one, so that each set can be freed once used
            yield size, nested.pop(0)
    for o in study.others:
        if o in REF_FREE and (o not in SEED_FREE or seed == study.seeds[0]):
            yield study.ref_sizes[0], compute_scores(model, chunks[0], o, seed=seed, size=p.input_size)


def run_block(model, d: Data, study: Study, ev: Split, recal: list, p, seed: int,
              confirm: Split | None = None) -> pd.DataFrame:
    """Every score set of one seed, then its accuracy curves; a duplicate composite's rows are
    its twin's (the same scores give the same pruned networks)."""
    rows = []
    for ref_size, s in seed_scores(model, d, study, p, seed):
        for r in curves(model, s, ev, recal, p, study.fractions, study.sparsities, confirm):
            rows.append({"criterion": s["criterion"], "composite": s["composite"], "ref_per_class": ref_size,
                         "seed": seed, "score_seconds": s["seconds"], **r})
        del s  # freed before the next set is scored
    block = pd.DataFrame(rows)
    twins = [block[(block["criterion"] == LRP) & (block["composite"] == b)].assign(composite=c)
             for c, b in duplicates(list(study.composites)).items()]
    return pd.concat([block, *twins], ignore_index=True)


def run(model: nn.Module, d: Data, study: Study, ev: Split, recal: list, p: config.Profile,
        confirm: Split | None = None) -> pd.DataFrame:
    """The whole grid, one saved block per seed under ``artifacts/<profile>/lowdata/<key>/``: an
    interrupted run resumes where it stopped, and only a study with the same model and
    settings reuses a block. Reference-free criteria (weight, random) are measured once and
    repeated at every reference size. With ``confirm`` (:func:`confirmation_split`, of the
    study's ``confirm_per_class``) every pruned network is also scored there."""
    if (confirm is None) != (study.confirm_per_class == 0):
        raise StudyError(f"the study confirms on {study.confirm_per_class} image(s) per class, but "
                         f"{'no' if confirm is None else 'a'} confirmation split was given")
    folder = artifacts.lowdata(p).path / study.key(model)
    blocks = []
    for seed in progress.steps(study.seeds, "low-data study, seed"):
        blocks.append(artifacts.resumable(
            folder / f"seed{seed}.csv", lambda: run_block(model, d, study, ev, recal, p, seed, confirm),
            lambda block, path: checkpoint.atomic_write(path, lambda tmp: block.to_csv(tmp, index=False)),
            lambda path: pd.read_csv(path, keep_default_na=False, dtype={"confirm_hits": str}),  # hex, not numbers
            reread=True))
    return _repeat_reference_free(pd.concat(blocks, ignore_index=True), study)


def _repeat_reference_free(rows: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Rows of reference-free criteria copied to every reference size (seed-free ones to every seed)."""
    free = rows[rows["criterion"].isin(REF_FREE)]
    copies = [rows[~rows["criterion"].isin(REF_FREE)]]
    for r in study.ref_sizes:
        for s in study.seeds:
            part = free[(free["criterion"] == RANDOM) & (free["seed"] == s)]
            if s == study.seeds[0]:
                part = pd.concat([part, free[free["criterion"].isin(SEED_FREE)]])
            copies.append(part.assign(ref_per_class=r))
    out = pd.concat(copies, ignore_index=True)
    out["label"] = [label(c, k) for c, k in zip(out["criterion"], out["composite"])]
    return out


def label(criterion: str, composite: str) -> str:
    """``lrp (epsilon)`` for LRP rows, the criterion's name otherwise."""
    if criterion != LRP:
        return criterion
    return SEARCHED if composite.startswith(composites.DEPTH_PREFIX) else f"{LRP} ({composite})"


# ----------------------------------------------------------------------------- rule search
def rule_search(model: nn.Module, d: Data, ev: Split, p: config.Profile, fractions, seeds,
                ref_size: int) -> tuple[str, pd.DataFrame]:
    """Per-depth rules chosen one group at a time (dense, high, middle, low), starting from
    LRP-epsilon everywhere: each candidate rule for the group is scored by the area under
    the structured accuracy curve (as pruned, on ``ev``, mean over ``seeds``), and the best is
    kept before moving to the next group. Returns the chosen composite and every candidate's score."""
    refs = [reference(d, ref_size, s, p.held_out_per_class) for s in seeds]
    seen: dict[str, float] = {}

    def score(name):
        if name not in seen:
            aucs = [stats.auc(fractions, [r["val_acc"] for r in curves(
                model, _score(model, ref, LRP, name, s, p), ev, [], p, fractions, ())])
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
        for a in [lab for lab in by if lab.startswith(LRP)]:
            for b in [lab for lab in by if not lab.startswith(LRP)]:
                other = by[b].reindex(by[a].index, fill_value=by[b].iloc[0]) if len(by[b]) == 1 else by[b]
                common = by[a].index.intersection(other.index)
                d = stats.paired_difference(by[a][common], other[common])
                rows.append({"kind": kind, "bn_recalibrated": bn, "ref_per_class": r, "lrp": a, "other": b,
                             **{k: d[k] for k in ("n", "mean", "low", "high", "resolved", "p")}})
    out = pd.DataFrame(rows).rename(columns={"mean": "diff_mean", "low": "diff_low", "high": "diff_high"})
    return stats.with_holm(out)


CONFIRMED_OTHERS = (WEIGHT, TAYLOR, GRADIENT)
"""The criteria the confirmation compares LRP with (random, the floor, is not a contender)."""


def trapezoid_weights(x) -> np.ndarray:
    """Weights w with sum(w * y) == :func:`stats.auc` (x, y) for every y (x sorted ascending)."""
    x = np.asarray(x, dtype=float)
    gaps = np.diff(x) / 2
    return (np.concatenate([gaps, [0.0]]) + np.concatenate([[0.0], gaps])) / (x[-1] - x[0])


def best_stock(summary: pd.DataFrame, kind: str, bn: bool, ref: int) -> str:
    """The stock LRP composite (not the searched one) with the largest mean screen AUC in a setting."""
    s = summary[(summary["kind"] == kind) & (summary["bn_recalibrated"] == bn) & (summary["ref_per_class"] == ref)
                & summary["label"].str.startswith(f"{LRP} (") & (summary["label"] != SEARCHED)]
    return s.loc[s["auc_mean"].idxmax(), "label"]


def _hits(rows: pd.DataFrame, label: str, seeds, fractions, n: int) -> np.ndarray:
    """(seeds, fractions, images) hits of one criterion in one setting; a seed-free criterion's
    one seed serves every seed."""
    out = np.zeros((len(seeds), len(fractions), n), dtype=bool)
    g = rows[rows["label"] == label].set_index(["seed", "fraction"])["confirm_hits"]
    own = set(g.index.get_level_values(0))
    for i, seed in enumerate(seeds):
        use = seed if seed in own else min(own)
        for j, f in enumerate(fractions):
            out[i, j] = unpack_hits(g.loc[(use, f)], n)
    return out


def confirmation(rows: pd.DataFrame, summary: pd.DataFrame, pairs: pd.DataFrame, n_images: int,
                 n_boot: int = 4000, seed: int = 0) -> pd.DataFrame:
    """The comparisons the prose states, measured again on the confirmation images: in every
    setting (kind, recalibration, reference size), the best stock LRP composite on the screen
    and the searched one against each of :data:`CONFIRMED_OTHERS`. The difference is the AUC's
    (points), from per-image hits, with a bootstrap over seeds and images together
    (:func:`stats.two_way_bootstrap`) and Holm's correction over every row; beside it, the
    screen's paired interval on its fewer images, for the width the confirmation buys."""
    out = []
    for (kind, bn, ref), g in rows.groupby(["kind", "bn_recalibrated", "ref_per_class"], sort=False):
        seeds = sorted(g.loc[g["label"].str.startswith(LRP), "seed"].unique())
        fractions = sorted(g["fraction"].unique())
        w = trapezoid_weights(fractions)
        others = [o for o in CONFIRMED_OTHERS if o in set(g["label"])]
        lrps = list(dict.fromkeys([best_stock(summary, kind, bn, ref),
                                   *([SEARCHED] if SEARCHED in set(g["label"]) else [])]))
        for a in lrps:
            ha = _hits(g, a, seeds, fractions, n_images)
            for b in others:
                d = 100.0 * np.einsum("f,sfn->sn", w, ha.astype(float) - _hits(g, b, seeds, fractions, n_images))
                boot = stats.two_way_bootstrap(d, n_boot=n_boot, seed=seed)
                screen = pairs[(pairs["kind"] == kind) & (pairs["bn_recalibrated"] == bn)
                               & (pairs["ref_per_class"] == ref) & (pairs["lrp"] == a) & (pairs["other"] == b)]
                out.append({"kind": kind, "bn_recalibrated": bn, "ref_per_class": ref, "lrp": a, "other": b,
                            **{k: boot[k] for k in ("n_seeds", "n_images")}, "diff_mean": boot["mean"],
                            "diff_low": boot["low"], "diff_high": boot["high"], "p": boot["p"],
                            "half_width": (boot["high"] - boot["low"]) / 2,
                            "screen_diff_mean": screen["diff_mean"].iloc[0] if len(screen) else np.nan,
                            "screen_half_width": ((screen["diff_high"] - screen["diff_low"]) / 2).iloc[0]
                            if len(screen) else np.nan})
    table = stats.with_holm(pd.DataFrame(out))
    return table.assign(verdict=[verdict(m, r) for m, r in zip(table["diff_mean"], table["resolved_holm"])])


def verdict(diff: float, resolved: bool) -> str:
    """``ahead``, ``behind`` or ``tied``: the sign of a difference that survives the correction."""
    return "tied" if not resolved else ("ahead" if diff > 0 else "behind")


def hits_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Every pruned network's per-image hits on the confirmation images (one hexadecimal string
    of bits per row, :func:`pack_hits`), with its keys: what the confirmation's intervals are
    computed from, committed so that they can be recomputed."""
    keys = ["kind", "bn_recalibrated", "criterion", "composite", "ref_per_class", "seed", "fraction"]
    first = rows["ref_per_class"] == rows["ref_per_class"].min()
    seen = rows[~rows["criterion"].isin(REF_FREE) | first]  # reference-free ones are repeated per size
    return seen[[*keys, "confirm_acc", "confirm_s", "confirm_hits"]].reset_index(drop=True)


def charge_confirmation(timer: "Timer", rows: pd.DataFrame) -> None:
    """Move the seconds the study spent on the confirmation images (recorded per row, when the
    block was computed) from the timer's ``study`` part to its ``confirmation`` part: what the
    confirmation costs, for the cost table."""
    seconds = float(hits_table(rows)["confirm_s"].sum())
    timer.parts["study"] = max(0.0, timer.parts.get("study", 0.0) - seconds)  # resumed blocks cost nothing now
    timer.parts["confirmation"] = timer.parts.get("confirmation", 0.0) + seconds


def lrp_for_conclusions(labels) -> str:
    """The LRP variant the conclusions speak for: the searched composite (chosen on the other
    validation half, so not selected on the numbers compared), else Yeom et al.'s default."""
    return SEARCHED if SEARCHED in set(labels) else f"{LRP} ({EPSILON_PLUS_FLAT})"


def conclusions(summary: pd.DataFrame, pairs: pd.DataFrame) -> list[str]:
    """Sentences from the numbers: per kind and recalibration, at which reference sizes LRP
    (:func:`lrp_for_conclusions`) is ahead of the strongest other criterion (by mean AUC),
    by how much, and whether the paired interval resolves it."""
    lrp, out = lrp_for_conclusions(summary["label"]), []
    for (kind, bn), s in summary.groupby(["kind", "bn_recalibrated"], sort=False):
        where = "after BatchNorm recalibration" if bn else "as pruned"
        parts = []
        for r, g in s.groupby("ref_per_class"):
            oth = g[~g["label"].str.startswith(LRP)].sort_values("auc_mean").iloc[-1]["label"]
            d = pairs[(pairs["kind"] == kind) & (pairs["bn_recalibrated"] == bn) & (pairs["ref_per_class"] == r)
                      & (pairs["lrp"] == lrp) & (pairs["other"] == oth)].iloc[0]
            verdict = "resolved" if d["resolved_holm"] else "not resolved"
            ahead = "ahead of" if d["diff_mean"] > 0 else "behind"
            parts.append(f"{r}/class: {ahead} {oth} by {d['diff_mean']:+.2f} points "
                         f"[{d['diff_low']:+.2f}, {d['diff_high']:+.2f}], {verdict}")
        out.append(f"**{kind}, {where}** — {lrp} against the strongest other criterion (AUC, paired by "
                   f"seed, 95 % interval; resolved: after Holm's correction over the table's {len(pairs)} "
                   f"comparisons): " + "; ".join(parts) + ".")
    return out


def confirmed_conclusions(confirm: pd.DataFrame) -> list[str]:
    """Sentences from the confirmation: per kind and recalibration, at every reference size, the
    best stock LRP composite's and the searched rule's verdict against each other criterion
    (difference and interval on the confirmation images; the verdict after Holm's correction)."""
    n, m = int(confirm["n_images"].iloc[0]), len(confirm)
    out = []
    for (kind, bn), s in confirm.groupby(["kind", "bn_recalibrated"], sort=False):
        where = "after BatchNorm recalibration" if bn else "as pruned"
        parts = []
        for r, g in s.groupby("ref_per_class"):
            best = g[g["lrp"] != SEARCHED]
            w = best[best["other"] == WEIGHT].iloc[0] if (best["other"] == WEIGHT).any() else best.iloc[0]
            rest = ", ".join(f"{x.verdict} {x.other}" for x in best.itertuples() if x.other != w["other"])
            searched = g[g["lrp"] == SEARCHED]
            parts.append(f"{r}/class: `{w['lrp']}` {w['verdict']} {w['other']} ({w['diff_mean']:+.2f} "
                         f"[{w['diff_low']:+.2f}, {w['diff_high']:+.2f}])" + (f", {rest}" if rest else "")
                         + ("; searched rule: " + ", ".join(f"{x.verdict} {x.other}" for x in searched.itertuples())
                            if len(searched) else ""))
        out.append(f"**{kind}, {where}**, confirmed on {n:,} images: " + "; ".join(parts) + ".")
    out.append(f"Each verdict is the AUC difference's after Holm's correction over the {m} comparisons "
               "(bootstrap over seeds and images together); the best stock composite in each setting is the one "
               "with the largest AUC on the screen.")
    return out


def search_sentence(summary: pd.DataFrame, search_table: pd.DataFrame, p: config.Profile) -> str:
    """Whether the searched rule beat the best stock composite on the comparison half's screen,
    and what of the search's design may explain it when it did not."""
    lrp = summary[summary["label"].str.startswith(f"{LRP} (")]
    wins, total = 0, 0
    for (kind, bn, ref), g in lrp.groupby(["kind", "bn_recalibrated", "ref_per_class"]):
        mean = g.set_index("label")["auc_mean"]
        if SEARCHED in mean and len(mean) > 1:
            total += 1
            wins += bool(mean[SEARCHED] > mean.drop(SEARCHED).max())
    if total == 0:
        return "No rule search was compared."
    span = int(np.prod([len(c) for c in SEARCH_CANDIDATES.values()]))
    head = (f"The searched rule beat the best stock composite on the comparison half's screen in {wins} of "
            f"{total} settings.")
    if wins * 2 > total:
        return head
    return head + (
        f" The search did not help, and its design may explain why: it scored {len(search_table)} of the {span} "
        f"rule assignments its candidates span (greedy, one depth group at a time from ε everywhere), each on "
        f"{100 * p.lowdata_eval_per_class} images of the search half, {min(2, p.lowdata_seeds)} seed(s) of "
        f"{p.ref_per_class} images per "
        "class, structured and as pruned only, so its choice carries the screen's sampling error and never "
        "saw the other settings; and its candidates hold no α-β rule.")


def relevance_timing(model: nn.Module, ref: Split, composite_names, p: config.Profile) -> pd.DataFrame:
    """Seconds for each composite's LRP scores against the gradient criterion's on the same
    images, measured side by side (``scores.benchmark``: up to five alternating runs within the
    profile's ``latency_budget_s``, medians)."""
    from ..methods.scores import benchmark
    rows = []
    for c in composite_names:
        b = benchmark(model, ref, (LRP, GRADIENT), repeats=5, composite=c, size=p.input_size,
                      budget_s=p.latency_budget_s).set_index("criterion")
        rows.append({"composite": c, "images": len(ref), "lrp_s": b.loc[LRP, "median_seconds"],
                     "gradient_s": b.loc[GRADIENT, "median_seconds"], "x_gradient": b.loc[LRP, "x_gradient"]})
    return pd.DataFrame(rows)


def test_auc(model: nn.Module, d: Data, composite: str, study: Study, ref_size: int, p) -> dict:
    """The searched composite's structured AUC on the test split (as pruned), over the study's
    seeds: the only time the study reads the test split."""
    aucs = []
    for seed in study.seeds:
        s = _score(model, reference(d, ref_size, seed, p.held_out_per_class), LRP, composite, seed, p)
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


def study_conclusions(summary: pd.DataFrame, pairs: pd.DataFrame, confirm: pd.DataFrame | None,
                      search_line: str = "") -> list[str]:
    """The confirmed sentences when the study confirmed its screen, else the screen's; then
    what the rule search achieved."""
    main = confirmed_conclusions(confirm) if confirm is not None and len(confirm) else conclusions(summary, pairs)
    return main + ([search_line] if search_line else [])


def findings_markdown(summary: pd.DataFrame, pairs: pd.DataFrame, searched: str, test: dict,
                      timing: pd.DataFrame, cost: pd.DataFrame, confirm: pd.DataFrame | None = None,
                      search_line: str = "") -> str:
    """The notebook's closing section, written from its own numbers."""
    slow = timing[timing["x_gradient"] > 2]
    lines = ["## What this shows", ""] + [f"- {c}" for c in study_conclusions(summary, pairs, confirm, search_line)] + [
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


def confirm_pivot(confirm: pd.DataFrame) -> pd.DataFrame:
    """The confirmation as one cell per comparison and reference size, rows by LRP's role (the
    best stock composite, which may differ from one size to the next, or the searched one):
    ``+0.74 [+0.10, +1.40] ahead (epsilon)``."""
    role = ["searched" if a == SEARCHED else "best stock" for a in confirm["lrp"]]
    cells = confirm.assign(lrp=role, diff=[
        f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}] {v}" + ("" if a == SEARCHED else f" ({a[len(LRP) + 2:-1]})")
        for m, lo, hi, v, a in zip(confirm["diff_mean"], confirm["diff_low"], confirm["diff_high"],
                                   confirm["verdict"], confirm["lrp"])])
    wide = cells.pivot_table(index=["kind", "bn_recalibrated", "lrp", "other"], columns="ref_per_class",
                             values="diff", aggfunc="first", sort=False)
    wide.columns = [f"{c}/class" for c in wide.columns]
    return wide.reset_index()


def width_sentence(confirm: pd.DataFrame) -> str:
    """What the confirmation buys: its intervals' median half-width against the screen's."""
    return (f"On {int(confirm['n_images'].iloc[0]):,} confirmation images the intervals' median half-width is "
            f"{confirm['half_width'].median():.2f} points, against {confirm['screen_half_width'].median():.2f} on "
            "the screen's images (whose interval carried only the seeds' spread).")


def auc_pivot(summary: pd.DataFrame, kind: str, bn: bool) -> pd.DataFrame:
    """AUC mean ± std (%) per criterion (rows) and reference size (columns)."""
    s = summary[(summary["kind"] == kind) & (summary["bn_recalibrated"] == bn)]
    cells = s.assign(auc=[f"{m:.2f} ± {d:.2f}" for m, d in zip(s["auc_mean"], s["auc_std"])])
    wide = cells.pivot_table(index="label", columns="ref_per_class", values="auc", aggfunc="first")
    wide.columns = [f"{c}/class" for c in wide.columns]
    return wide.reset_index().rename(columns={"label": "criterion"})


def report_section(summary: pd.DataFrame, pairs: pd.DataFrame, searched: str, test: dict,
                   timing: pd.DataFrame, cost: pd.DataFrame, baseline: dict,
                   confirm: pd.DataFrame | None = None, search_line: str = "") -> str:
    """The study's section of ``REPORT.md`` (and, through it, of the README); ``baseline`` is
    the metrics saved with the baseline model the study pruned."""
    n = int(summary["n_seeds"].max())
    lines = ["## Few reference images, no fine-tuning (notebook 05)", "",
             f"Pruned baseline: test accuracy {baseline['test_acc']:.2f} %, {int(baseline['parameters']):,} "
             f"parameters. AUC = mean validation accuracy (%) over the swept fractions, mean ± std over {n} seeds "
             "(reference images drawn from the training split; accuracy on a fixed half of the "
             "validation split). Full tables: `lowdata_auc.csv`, `lowdata_paired.csv`, `lowdata.csv`; the "
             "confirmation: `lowdata_confirm.csv`, from the per-image hits in `lowdata_confirm_hits.csv`.", ""]
    lines += [f"- {c}" for c in study_conclusions(summary, pairs, confirm, search_line)] + [
        f"- Rule search (scored on the other validation half): `{searched}`; test-split AUC "
        f"(structured, as pruned, {test['ref_per_class']}/class): {test['test_auc_mean']:.2f} ± "
        f"{test['test_auc_std']:.2f} over {test['n_seeds']} seeds.",
        "- LRP time / gradient time on the same images: "
        + ", ".join(f"`{c}` {x:.2f}x" for c, x in zip(timing["composite"], timing["x_gradient"]))
        + f" (target ≤ 2x). The study took {cost.iloc[-1]['minutes']:.1f} minutes.", ""]
    if confirm is not None and len(confirm):
        lines += [width_sentence(confirm), "", "**The confirmation** (AUC difference LRP − other, points, "
                  "[95 % bootstrap interval], verdict after Holm's correction), by reference images per class:", "",
                  tables.markdown(confirm_pivot(confirm)), ""]
    for kind in ("structured", "unstructured"):
        for bn in (False, True):
            if ((summary["kind"] == kind) & (summary["bn_recalibrated"] == bn)).any():
                where = "after BatchNorm recalibration" if bn else "as pruned"
                lines += [f"**{kind}, {where}**", "", tables.markdown(auc_pivot(summary, kind, bn)), ""]
    lines += ["![AUC against reference images per class](lowdata_auc.png)", "",
              "![accuracy against the fraction of filters removed](lowdata_structured.png)", ""]
    return "\n".join(lines)
