"""Two routes to a smaller network, each run per criterion, point and seed with one recipe.

* ``compute`` (structured): remove a fraction of all filters, allocated globally by the
  criterion's filter scores (Torch-Pruning surgery), then fine-tune. Fewer parameters and FLOPs.
* ``size`` (the original report's metric, file size): zero a fraction of all weights, ranked
  globally by the criterion's weight scores, fine-tune with ``torch.nn.utils.prune``'s masks
  held fixed, quantize to int8 (:mod:`helpers.methods.quantization`) and store sparse (bitmask + int8
  values, then LZMA).
* ``combined``: the compute route's model, then the size route on top (Deep Compression's
  order: prune, quantize, code).
* ``report``: the original report's operating point (secondary): its own allocation (weights
  pruned globally by magnitude to the point's sparsity, each layer's sparsity minus
  ``p.report_margin`` is its fraction of filters removed), the same architecture for every
  criterion, so that only the choice of filters differs; then as the compute route.

A seed fixes the reference images the scores are computed on, the order of the training data
and the random criterion; nothing else differs between seeds. Every run writes its result row
(``result.json``) when it ends: a finished run is read back, an interrupted one resumes from its
last epoch. A run that diverges or collapses (:class:`helpers.methods.training.DivergenceError`) is
recorded as such, with the error, and never enters a mean.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..core import artifacts, checkpoint, config, measure, models, progress, stats
from ..methods import criteria, finetune, pruning, quantization, scores
from ..core.data import Data, Split, class_balanced_sample, normalize
from ..core.vocabulary import (COMBINED, COMPUTE, CONTROL, INT8_ROUTES, ITERATIVE, LRP, REPORT_POINT, SIZE, WEIGHT,
                               default_bits)
from ..methods.training import DivergenceError, evaluate, load_model, save_model


def reference(d: Data, p: config.Profile, seed: int) -> Split:
    """The seed's reference images: ``p.ref_per_class`` training images per class."""
    return class_balanced_sample(d.train, p.ref_per_class, seed)


def seed_scores(model: nn.Module, d: Data, p: config.Profile, seed: int, names: list[str],
                folder: Path) -> scores.Saved:
    """Each criterion's scores of ``model`` on the seed's reference images: computed and saved
    under ``folder`` where missing, then read from there when used (:class:`scores.Saved`,
    checked against the model's fingerprint), one set in memory at a time."""
    ref = {}  # drawn once, when the first criterion is computed

    def compute(name):
        ref.setdefault("split", reference(d, p, seed))
        return criteria.compute_scores(model, ref["split"], name, seed=seed, size=p.input_size)
    for name in names:
        artifacts.resumable(scores.path_for(folder, name), lambda: compute(name),
                            lambda s, _: scores.save(s, model, folder, name), lambda path: None)
    return scores.Saved(folder, names, model)


def structured(model: nn.Module, s: dict, fraction: float, p: config.Profile) -> nn.Module:
    """A copy of ``model`` without ``fraction`` of its filters, chosen globally by ``s``."""
    counts = pruning.global_counts(model, s["filter"], fraction)
    return pruning.prune_filters(model, s["filter"], counts, p.input_size)


def masked(model: nn.Module, s: dict, sparsity: float, p: config.Profile) -> nn.Module:
    """A copy of ``model`` with ``sparsity`` of its weights masked to zero (masks kept)."""
    return pruning.unstructured_prune(model, s, sparsity, permanent=False)


def report_counts(model: nn.Module, sparsity: float, p: config.Profile) -> dict[str, int]:
    """Filters kept per layer under the original report's allocation: ``model``'s weights
    pruned globally by magnitude to ``sparsity``, each layer's sparsity minus ``p.report_margin``
    is its fraction of filters removed."""
    magnitude = criteria.weight_magnitude(model)
    return pruning.keep_counts(model, pruning.report_allocation(model, magnitude, sparsity, p.report_margin))


def report_point(model: nn.Module, s: dict, sparsity: float, p: config.Profile) -> nn.Module:
    """A copy of ``model`` pruned to the report's allocation at ``sparsity``, the filters of
    each layer chosen by ``s``."""
    return pruning.prune_filters(model, s["filter"], report_counts(model, sparsity, p), p.input_size)


PREPARE = {COMPUTE: structured, SIZE: masked, COMBINED: masked, REPORT_POINT: report_point}


def _prune_and_fit(name: str, start: nn.Module, s: dict, point: float, route: str, d: Data, p: config.Profile,
                   out: Path, steps: int, teacher: nn.Module | None, label: str):
    """One-shot: prune ``start`` by ``route`` at ``point`` and fine-tune ``steps`` steps."""
    return finetune.one_shot(PREPARE[route](start, s, point, p), d, p, out, steps, p.arch, teacher, label)


def _iterate(name: str, start: nn.Module, s: dict, point: float, route: str, d: Data, p: config.Profile,
             out: Path, steps: int, teacher: nn.Module | None, label: str):
    """Iterative (Yeom et al. 2021; :func:`helpers.methods.finetune.iterative`): ``p.iterative_step`` of the
    filters per round, rescored on the seed's reference images, the same ``steps`` in total."""
    return finetune.iterative(start, d, reference(d, p, p.seed), p, out, name, point, p.iterative_step,
                              steps, p.arch, teacher=teacher)


TRAIN = {COMPUTE: _prune_and_fit, SIZE: _prune_and_fit, COMBINED: _prune_and_fit, REPORT_POINT: _prune_and_fit,
         ITERATIVE: _iterate}


def run_name(route: str, name: str, point: float, seed: int, tag: str = "") -> str:
    """The folder of one run inside its recipe's folder."""
    return f"{route}{tag}_{name}_{point:g}_s{seed}"


def run(route: str, name: str, point: float, seed: int, start: nn.Module, s: dict, d: Data,
        p: config.Profile, folder: Path, steps: int, baseline: nn.Module, tag: str = "") -> dict:
    """One fine-tuned run: prune ``start`` by ``route`` at ``point`` (fraction of filters, or
    sparsity) with criterion ``name``'s scores ``s`` (one-shot; the iterative route prunes in
    rounds and rescores), fine-tune ``steps`` optimizer steps with the recipe in ``p``
    (distilling from ``baseline`` when ``p.kd_alpha > 0``), measure it; resumable, and a
    finished run is read back. ``tag`` tells apart runs that start from different models (the
    combined route's fraction)."""
    if route not in TRAIN:
        raise ValueError(f"unknown route {route!r}; valid: {', '.join(TRAIN)}")
    out = Path(folder) / run_name(route, name, point, seed, tag)

    def compute() -> dict:
        label = f"{route} route{tag and ' ' + tag}, {name}, {point:g}, seed {seed}"
        progress.line(f"fine-tuning: {label}")
        config.seed_everything(seed)
        row = {"route": route, "criterion": name, "point": point, "seed": seed,
               "lr": p.lr, "kd_alpha": p.kd_alpha, "steps": steps}
        try:
            model, history = TRAIN[route](name, start, s, point, route, d, dataclasses.replace(p, seed=seed), out,
                                          steps, baseline if p.kd_alpha > 0 else None, label)
        except DivergenceError as err:
            return {**row, "status": "diverged", "error": str(err)}
        last = history[history["stage"] == history["stage"].max()] if "stage" in history else history
        known = {} if MEASURE[route] is measure_size else {"val": float(last["val_acc"].max())}  # int8: anew
        measured = MEASURE[route](model, d, p, baseline, out, **known)
        return {**row, "status": "ok", "train_s": float(history["epoch_s"].sum()), **measured}
    return _with_bits(artifacts.resumable(out / "result.json", compute, checkpoint.save_json,
                                          lambda path: _finished(path, p, steps)))


def _with_bits(row: dict) -> dict:
    """``row`` with its ``weight_bits`` (:func:`helpers.core.vocabulary.default_bits` when it has none)."""
    return {**row, "weight_bits": row.get("weight_bits", default_bits(row["route"]))}


def grids(row: dict, folder: Path, d: Data, p: config.Profile, baseline: nn.Module, tag: str = "") -> list[dict]:
    """A finished size or combined run measured again on each narrower weight grid of
    ``p.weight_bits`` (:func:`helpers.methods.quantization.weight_range`): the same fine-tuned network,
    quantized with its int8 weights on fewer levels, stored sparse and LZMA-compressed, one row
    per grid. Resumable: each grid's row is saved in ``w<bits>/`` inside the run's folder and
    read back. A run that did not finish, or another route, gives no rows."""
    if row["route"] not in INT8_ROUTES or row["status"] != "ok":
        return []
    run_dir = Path(folder) / run_name(row["route"], row["criterion"], row["point"], row["seed"], tag)
    out, model = [], None
    keep = {k: row[k] for k in ("route", "criterion", "point", "seed", "lr", "kd_alpha", "steps", "status",
                                "train_s", "fraction") if k in row}

    def compute(bits: int) -> dict:
        nonlocal model
        model = fine_tuned(run_dir) if model is None else model
        return {**keep, **measure_size(model, d, p, baseline, run_dir / f"w{bits}", bits)}
    for bits in [b for b in p.weight_bits if b != 8]:
        out.append(artifacts.resumable(run_dir / f"w{bits}" / "result.json", lambda: compute(bits),
                                       checkpoint.save_json, checkpoint.load_json, reread=True))
    return out


def fine_tuned(run_dir: Path) -> nn.Module:
    """The fine-tuned network of a finished masked run (size or combined route), as measured:
    the weights of its best epoch on validation (what :func:`helpers.methods.training.fit` ends with),
    the masks folded in."""
    state = checkpoint.load(Path(run_dir) / "train_state.pt", kind="train_state",
                            hint="run the size route (notebook 06) first")
    model = models.build_model(state["run"]["spec"])
    for m in pruning.weight_layers(model).values():
        torch.nn.utils.prune.identity(m, "weight")
    model.load_state_dict(state["best"]["model"])
    return pruning.make_permanent(model).eval()


def measure_compute(model: nn.Module, d: Data, p: config.Profile, baseline: nn.Module, out: Path,
                    val: float | None = None, loss: bool = False) -> dict:
    """Validation (``val`` when the training history already holds it) and test accuracy of
    the fine-tuned structured model (and its test loss, with ``loss``), its parameters, FLOPs
    and their reduction factors; the model is saved (the combined route starts from it)."""
    save_model(model, models.spec_of(model, p.arch), out / "model.pt", p)
    test = evaluate(model, d.test, p.eval_batch_size, p.input_size)
    return {"val_acc": evaluate(model, d.val, p.eval_batch_size, p.input_size)["acc"] if val is None else val,
            "test_acc": test["acc"], "filters_removed": pruning.filters_removed(baseline, pruning.kept_filters(model)),
            **measure.cost(model, p.input_size, baseline), "size_bytes": measure.size_on_disk(model)["bytes"],
            **({"test_loss": test["loss"]} if loss else {})}


def measure_report(model: nn.Module, d: Data, p: config.Profile, baseline: nn.Module, out: Path,
                   val: float | None = None) -> dict:
    """:func:`measure_compute` with the test loss (the original report's table has it)."""
    return measure_compute(model, d, p, baseline, out, val, loss=True)


def measure_size(model: nn.Module, d: Data, p: config.Profile, baseline: nn.Module, out: Path,
                 weight_bits: int = 8) -> dict:
    """Fold the masks, quantize to int8 (calibrated on training batches; the weights on a
    ``weight_bits`` grid), store it sparse, and measure the int8 model: validation and test
    accuracy, weight sparsity, both file sizes and the file-size reduction against the float32
    baseline (LZMA-compressed file)."""
    model = pruning.make_permanent(model).eval()
    calibration = quantization.calibration_batches(d, p, 4)
    q = quantization.quantize(model.cpu(), calibration, calibration[0][:2], weight_bits=weight_bits)
    files = quantization.save_sparse(q, models.spec_of(model, p.arch), out / "int8_sparse.pt", weight_bits)
    base = measure.size_on_disk(baseline)["bytes"]
    return {"val_acc": _accuracy(q, d.val, p), "test_acc": _accuracy(q, d.test, p),
            "sparsity": pruning.global_sparsity(model), "parameters": measure.nonzero_parameters(model),
            "flops": measure.flops(model, p.input_size), "compression_x": base / files["xz_bytes"],
            "compression_x_uncompressed": base / files["sparse_bytes"],
            "flops_x": measure.flops(baseline, p.input_size) / measure.flops(model, p.input_size),
            "size_bytes": files["xz_bytes"], "sparse_bytes": files["sparse_bytes"], "weight_bits": weight_bits}


def _finished(path: Path, p: config.Profile, steps: int) -> dict:
    """The result of a finished run, if it was made with this recipe and budget."""
    row = checkpoint.load_json(path)
    if (row["lr"], row["kd_alpha"], row["steps"]) != (p.lr, p.kd_alpha, steps):
        raise checkpoint.CheckpointError(
            f"{path} was made with lr {row['lr']}, kd_alpha {row['kd_alpha']}, {row['steps']} steps, not "
            f"lr {p.lr}, kd_alpha {p.kd_alpha}, {steps} steps: delete its folder to run it again")
    return row


MEASURE = {COMPUTE: measure_compute, SIZE: measure_size, COMBINED: measure_size, REPORT_POINT: measure_report,
           ITERATIVE: measure_compute}


@torch.no_grad()
def _accuracy(qmodel: nn.Module, split: Split, p: config.Profile) -> float:
    """Top-1 accuracy (%) of the int8 model on ``split`` (channels-last, about 1.25x faster)."""
    correct = 0
    with models.channels_last(qmodel):
        for i in range(0, len(split), p.eval_batch_size):
            x = normalize(split.x[i:i + p.eval_batch_size], p.input_size)
            correct += (qmodel(x).argmax(1) == split.y[i:i + p.eval_batch_size]).sum().item()
    return 100.0 * correct / len(split)


def sweep(route: str, names: list[str], points: tuple, seed_scores: dict[int, Mapping[str, dict]], d: Data,
          p: config.Profile, folder: Path, steps: int, baseline: nn.Module) -> pd.DataFrame:
    """Every criterion at every point for every seed (seed by seed, so that an interrupted
    sweep already holds complete pairs), pruned from ``baseline``. Criterion ``"none"`` at point
    0 is the control: the unpruned network fine-tuned alike.

    A criterion whose first seed ends more than ``p.sweep_stop_points`` below the baseline's
    validation accuracy at a point is not run at the larger points, for any seed: accuracy only
    falls as compression grows, so those points cannot come within 1 point (0: every point)."""
    floor = evaluate(baseline, d.val, p.eval_batch_size, p.input_size)["acc"] - p.sweep_stop_points \
        if p.sweep_stop_points > 0 and len(points) > 1 else None
    rows, stop, first = [], {}, next(iter(seed_scores), None)
    for seed, by_name in seed_scores.items():
        for name in names:
            for x in ([0.0] if name == CONTROL else points):
                if x > stop.get(name, x):
                    break
                s = by_name[WEIGHT if name == CONTROL else name]
                row = run(route, name, x, seed, baseline, s, d, p, folder, steps, baseline)
                rows += [row, *grids(row, folder, d, p, baseline)]
                if seed == first and floor is not None and row.get("val_acc", floor) < floor:
                    stop.setdefault(name, x)
    return pd.DataFrame(rows)


def combined(names: list[str], fractions: dict[str, float], sparsities: dict[str, float], seeds: list[int],
             d: Data, p: config.Profile, folder: Path, steps: int, baseline: nn.Module) -> pd.DataFrame:
    """The size route on top of each criterion's compute-route model at ``fractions[name]``,
    at ``sparsities[name]``, scored again by the same criterion on the pruned network (criteria
    without both points are skipped)."""
    rows = []
    for seed in seeds:
        for name in [n for n in names if n in fractions and n in sparsities]:
            f, sp = fractions[name], sparsities[name]
            start = compute_model(folder, name, f, seed)
            s = seed_scores(start, d, p, seed, [name], Path(folder) / f"scores_f{f:g}_{name}_s{seed}")[name]
            row = run(COMBINED, name, sp, seed, start, s, d, p, folder, steps, baseline, tag=f"_f{f:g}")
            rows += [{**r, "fraction": f} for r in (row, *grids(row, folder, d, p, baseline, tag=f"_f{f:g}"))]
    return pd.DataFrame(rows)


def iterative(names: list[str], fraction: float, seeds: list[int], d: Data, p: config.Profile, folder: Path,
              steps: int, baseline: nn.Module) -> pd.DataFrame:
    """Iterative pruning to ``fraction`` of the filters, on the same budget and recipe as the
    compute route's one-shot runs, for every criterion and seed."""
    return pd.DataFrame([run(ITERATIVE, name, fraction, seed, baseline, {}, d, p, folder, steps, baseline)
                         for seed in seeds for name in names])


def compute_model(folder: Path, name: str, fraction: float, seed: int) -> nn.Module:
    """The saved fine-tuned model of a finished compute-route run."""
    model, _ = load_model(Path(folder) / run_name(COMPUTE, name, fraction, seed) / "model.pt",
                          "run the compute route (notebook 06) first")
    return model


def report_runs(names: list[str], sparsity: float, seed_scores: dict[int, Mapping[str, dict]], d: Data,
                p: config.Profile, folder: Path, steps: int, baseline: nn.Module) -> pd.DataFrame:
    """The report's operating point (route ``report``) for every criterion and seed, with
    ``run``, each run's artifact name (:func:`helpers.core.artifacts.finetuned_model`), and saved as
    the artifact notebook 07 picks its model from (:func:`helpers.core.artifacts.report_point_runs`)."""
    rows = sweep(REPORT_POINT, names, (sparsity,), seed_scores, d, p, folder, steps, baseline)
    rows["run"] = [f"{Path(folder).name}/{run_name(REPORT_POINT, r.criterion, r.point, r.seed)}"
                   for r in rows.itertuples()]
    checkpoint.save_text(rows.to_csv(index=False), artifacts.report_point_runs(p).path)
    return rows


def load_report_runs(p: config.Profile) -> pd.DataFrame:
    """The report point's runs saved by :func:`report_runs` (notebook 06)."""
    a = artifacts.report_point_runs(p)
    if not a.exists():
        raise checkpoint.CheckpointError(f"{a.path} does not exist: {a.hint} (with report_point true)")
    return pd.read_csv(a.path)


def best_run(runs: pd.DataFrame, criterion: str = LRP) -> str:
    """The run of ``criterion`` with the best validation accuracy (never test): its artifact
    name (the ``run`` column of :func:`report_runs`)."""
    mine = runs[runs["criterion"] == criterion]
    try:
        return stats.select_best(mine)["run"]
    except ValueError:
        raise ValueError(f"no fine-tuned run of {criterion!r}; runs: {sorted(set(runs['criterion']))}") from None
