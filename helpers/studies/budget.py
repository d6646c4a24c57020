"""The fine-tuning budget study: how much fine-tuning would the headline's targets need?

The series fine-tunes every run for ``finetune_epochs`` epochs of optimizer steps (cpu: 0.5,
156 steps on 40,000 training images), so that it fits its time budget, and at that budget it
misses some targets of REPORT.md's headline. This study measures what a larger budget buys: one
criterion per route, at a point whose network meets the route's compression target, fine-tuned
with the recipe notebook 06 chose, for several budgets, a few seeds each. It runs the headline's own code path
(:func:`helpers.studies.routes.run`): a run at the series' budget *is* the headline's run (read back
when notebook 06 has made it), and a seed fixes the same reference images and data order at
every budget, so budgets are compared paired by seed.

"Within 1 point" is decided on validation accuracy against the baseline's, as in the headline;
test accuracy is reported. It runs apart from the timed series: ``python -m helpers.studies.budget``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from torch import nn

from ..core import artifacts, checkpoint, config, progress, stats
from ..core.vocabulary import COMPUTE, LRP, SIZE, WEIGHT
from ..methods import criteria, finetune
from ..reporting import plots, report, tables
from . import headline, recipe, routes
from ..core.data import Data, load_data
from ..methods.training import evaluate, load_artifact

STUDY = ((SIZE, WEIGHT, 0.75), (SIZE, WEIGHT, 0.8), (COMPUTE, LRP, 0.45))
"""Default points, (route, criterion, point): beyond the headline's reach at the series' budget,
where the pruned networks meet the targets. On cpu, the FLOPs target binds on the compute route:
at 45 % of the filters LRP's network has 3.62x fewer parameters and 1.53x fewer FLOPs (on the
40,000-image baseline); weight magnitude is the size route's strongest criterion in the headline,
studied at 75 % sparsity (the smallest in steps of 5 points whose file is at least 12x smaller)
and at 80 % (about 15x)."""
BUDGETS = (0.5, 1.0, 2.0, 4.0)
"""Default budgets, in epochs of optimizer steps."""
KEYS = ["route", "criterion", "point", "budget_epochs"]


def folder(p: config.Profile, chosen: dict, epochs: float) -> Path:
    """Where the runs of budget ``epochs`` live: notebook 06's folder at the series' budget
    (its runs are reused), a folder per budget otherwise (a run's steps are checked on reuse)."""
    base = recipe.folder(p, chosen)
    return base if epochs == p.finetune_epochs else base.with_name(f"{base.name}_budget{epochs:g}")


def saved_recipe(p: config.Profile) -> dict:
    """The recipe notebook 06 chose on validation (its ``finetune_recipe`` table)."""
    try:
        return recipe.choose(report.read_table(p.figures, "finetune_recipe"))
    except checkpoint.CheckpointError:
        raise checkpoint.CheckpointError(f"no finetune_recipe table under {p.figures}: run notebook 06 on profile "
                                         f"{p.name!r} first (it chooses the recipe), or pass --lr and --kd-alpha"
                                         ) from None


def runs(study: tuple, budgets: tuple, seeds: list[int], baseline: nn.Module, d: Data, p: config.Profile,
         chosen: dict) -> pd.DataFrame:
    """Every study point at every budget for every seed (seed by seed, so that an interrupted
    study already holds complete pairs); resumable, finished runs are read back."""
    ft, rows, names = recipe.apply(p, chosen), [], sorted({name for _, name, _ in study})
    for seed in seeds:
        s = routes.seed_scores(baseline, d, p, seed, names, artifacts.finetuned(p, "scores").path / f"seed{seed}")
        for route, name, point in study:
            for epochs in sorted(budgets):
                steps = finetune.budget_steps(d, p, epochs)
                row = routes.run(route, name, point, seed, baseline, s[name], d, ft, folder(p, chosen, epochs),
                                 steps, baseline)
                rows.append({**row, "budget_epochs": epochs})
    return pd.DataFrame(rows)


def summary(rows: pd.DataFrame, baseline_val: float, baseline_test: float, max_drop: float = 1.0) -> pd.DataFrame:
    """Per point and budget: n, validation and test accuracy (mean, std), their drops against
    the baseline, whether the validation mean is within ``max_drop``, mean compression, steps
    and training seconds, and the gain in test accuracy over the point's smallest budget
    (paired by seed, 95 % interval)."""
    ok = headline.finished(rows)
    test = stats.spread(ok, KEYS, "test_acc").rename(columns={"mean": "test_acc_mean", "std": "test_acc_std"})
    val = stats.spread(ok, KEYS, "val_acc").rename(columns={"mean": "val_acc_mean", "std": "val_acc_std"})
    rest = ok.groupby(KEYS, as_index=False, sort=False)[["steps", "train_s", "compression_x", "flops_x"]].mean()
    out = test.merge(val.drop(columns="n"), on=KEYS).merge(rest, on=KEYS)
    out["val_drop"] = baseline_val - out["val_acc_mean"]
    out["test_drop"] = baseline_test - out["test_acc_mean"]
    out["within"] = out["val_drop"] <= max_drop
    gains = pd.DataFrame([row for _, g in ok.groupby(KEYS[:3], sort=False) for row in _gains(g)],
                         columns=[*KEYS, "gain_mean", "gain_low", "gain_high"])
    return out.merge(gains, on=KEYS, how="left").sort_values(KEYS, ignore_index=True)


def _gains(g: pd.DataFrame) -> list[dict]:
    """Test accuracy at each larger budget minus at the smallest, paired by seed, for one point."""
    wide = g.pivot_table(index="seed", columns="budget_epochs", values="test_acc")
    first, out = min(wide.columns), []
    for b in [b for b in wide.columns if b != first]:
        both = wide[[first, b]].dropna()
        if len(both):
            d = stats.paired_difference(both[b], both[first])
            out.append({**dict(zip(KEYS[:3], g.iloc[0][KEYS[:3]])), "budget_epochs": b,
                        "gain_mean": d["mean"], "gain_low": d["low"], "gain_high": d["high"]})
    return out


def sentences(table: pd.DataFrame, max_drop: float = 1.0) -> list[str]:
    """What the study shows, per point, from :func:`summary`'s table."""
    lines = []
    for (route, name, point), g in table.groupby(KEYS[:3], sort=False):
        g = g.sort_values("budget_epochs")
        what = (f"{g['compression_x'].mean():.1f}x smaller file" if route != COMPUTE else
                f"{g['compression_x'].mean():.2f}x fewer parameters, {g['flops_x'].mean():.2f}x fewer FLOPs")
        drops = ", ".join(f"{r.budget_epochs:g}: {r.val_drop:.2f}" for r in g.itertuples())
        hit = g[g["within"]]
        first = hit["budget_epochs"].iloc[0] if len(hit) else None
        verdict = (f"within {max_drop:g} point from {first:g} epoch{'' if first == 1 else 's'} "
                   f"({int(hit['steps'].iloc[0])} optimizer steps, {hit['train_s'].iloc[0]:.0f} s of training per "
                   "run here)"
                   if len(hit) else f"not within {max_drop:g} point at any budget tried "
                   f"(up to {g['budget_epochs'].max():g} epochs, {g['train_s'].iloc[-1]:.0f} s of training per run)")
        lines.append(f"{route} route, {name} at {point:g} ({what}; n={int(g['n'].min())} seeds): validation drop "
                     f"against the baseline by budget in epochs {drops} points; {verdict}; test drop at the largest "
                     f"budget {g['test_drop'].iloc[-1]:.2f} ± {g['test_acc_std'].iloc[-1]:.2f} points.")
    return lines


def section(table: pd.DataFrame, lines: list[str], p: config.Profile, chosen: dict) -> str:
    """REPORT.md's ``budget`` section."""
    cols = ["route", "criterion", "point", "budget_epochs", "steps", "n", "compression_x", "flops_x", "val_drop",
            "test_acc_mean", "test_acc_std", "test_drop", "gain_mean", "gain_low", "gain_high", "within", "train_s"]
    return "\n".join([
        "## Fine-tuning budget: what the targets would need (`python -m helpers.studies.budget`)", "",
        f"The series fine-tunes every run for {p.finetune_epochs:g} epochs of optimizer steps. Here the same "
        f"recipe ({recipe.name(chosen)}) and code path run longer, at points whose networks meet the "
        "compression targets. Drops are against the baseline (validation locates \"within 1 point\"); the gain is "
        "test accuracy over the smallest budget, paired by seed (95 % interval). Run apart from the timed series.",
        "", tables.markdown(table.reindex(columns=cols)), "", "![drop against budget](budget.png)", "",
        *[f"- {line}" for line in lines]])


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """``python -m helpers.studies.budget``: the fine-tuning budget study (resumable; needs notebook 01's baseline
    and notebook 06's recipe table, committed for cpu, or --lr and --kd-alpha)."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--profile", default=config.DEFAULT_PROFILE, help="profile (default %(default)s)")
    ap.add_argument("--data-dir", default=None, help="folder holding cifar-100-python/ (default $LRP_DATA_DIR)")
    ap.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS), help="epochs of optimizer steps")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per point and budget (default %(default)s)")
    ap.add_argument("--point", nargs=3, action="append", metavar=("ROUTE", "CRITERION", "POINT"),
                    help=f"a study point (repeatable); default {' '.join(' '.join(map(str, s)) for s in STUDY)}")
    ap.add_argument("--lr", type=float, help="recipe's peak learning rate (default: the one notebook 06 chose)")
    ap.add_argument("--kd-alpha", type=float, help="recipe's distillation weight (default: notebook 06's)")
    args = ap.parse_args(argv)
    study = _study(ap, args.point)
    if args.seeds < 2 or min(args.budgets) <= 0:
        ap.error(f"need --seeds >= 2 (a spread) and positive --budgets, got {args.seeds} and {args.budgets}")
    if (args.lr is None) != (args.kd_alpha is None):
        ap.error("give both --lr and --kd-alpha, or neither (then notebook 06's chosen recipe is used)")
    p = config.get_profile(args.profile)
    chosen = saved_recipe(p) if args.lr is None else {"lr": args.lr, "kd_alpha": args.kd_alpha}
    return study_main(p, study, tuple(args.budgets), list(range(p.seed, p.seed + args.seeds)), chosen, args.data_dir)


def _study(ap: argparse.ArgumentParser, points: list | None) -> tuple:
    """The ``--point`` arguments as (route, criterion, point), checked."""
    out = []
    for route, name, point in points or STUDY:
        if route not in (COMPUTE, SIZE):
            ap.error(f"--point: route must be compute or size, got {route!r}")
        if name not in criteria.CRITERIA:
            ap.error(f"--point: unknown criterion {name!r}; valid: {', '.join(criteria.CRITERIA)}")
        try:
            x = float(point)
        except ValueError:
            ap.error(f"--point: the point must be a number in (0, 1), got {point!r}")
        if not 0 < x < 1:
            ap.error(f"--point: the point must be in (0, 1), got {x}")
        out.append((route, name, x))
    return tuple(out)


def study_main(p: config.Profile, study: tuple, budgets: tuple, seeds: list[int], chosen: dict,
               data_dir: str | None = None) -> pd.DataFrame:
    """Run the study and write its tables, figure and REPORT.md section under ``p.figures``."""
    config.seed_everything(p.seed)
    baseline, saved = load_artifact(artifacts.baseline(p), config.device(p))
    d = load_data(p, data_dir)
    base_val = evaluate(baseline, d.val, p.eval_batch_size, p.input_size)["acc"]
    progress.line(f"budget study: {len(study)} points x {len(budgets)} budgets x {len(seeds)} seeds, "
                  f"recipe {recipe.name(chosen)}")
    rows = runs(study, budgets, seeds, baseline, d, p, chosen)
    table = summary(rows, base_val, saved["metrics"]["test_acc"])
    report.write_table(rows.round(4), p.figures, "budget_per_seed")
    report.write_table(table.round(4), p.figures, "budget")
    plots.save(plots.budget(table), p.figures, "budget")
    lines = sentences(table)
    report.update_section(p.figures / "REPORT.md", "budget", section(table, lines, p, chosen))
    print("\n".join(lines))
    return table


if __name__ == "__main__":
    main()
