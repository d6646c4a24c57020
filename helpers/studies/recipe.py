"""One fine-tuning recipe for every fine-tuned run of the series, chosen on the validation split.

The grid: the profile's peak learning rates (``finetune_lrs``; cosine schedule after a linear
warm-up over ``warmup`` of the steps) times its distillation weights (``finetune_kd_alphas``; 0
is plain cross-entropy with the labels, otherwise knowledge distillation from the unpruned
baseline at temperature ``kd_temperature``, Hinton et al. 2015). Every recipe fine-tunes the same
pruned network (LRP's, ``recipe_fraction`` of the filters removed, seed ``p.seed``) for the
same number of optimizer steps; the recipe is the one with the best validation accuracy. Test
accuracy is recorded for the reader and never read by the choice.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
from torch import nn

from ..core import artifacts, config, stats
from ..core.vocabulary import COMPUTE, LRP
from . import routes
from ..core.data import Data


def grid(p: config.Profile) -> list[dict]:
    """Every recipe of the profile's grid: ``{"lr": ..., "kd_alpha": ...}``."""
    return [{"lr": lr, "kd_alpha": a} for a in p.finetune_kd_alphas for lr in p.finetune_lrs]


def name(recipe: dict) -> str:
    """Short name of a recipe, e.g. ``lr0.01_kd0.9`` (``kd0``: labels only)."""
    return f"lr{recipe['lr']:g}_kd{recipe['kd_alpha']:g}"


def apply(p: config.Profile, recipe: dict) -> config.Profile:
    """The profile that fine-tunes with ``recipe`` (cosine schedule)."""
    return dataclasses.replace(p, lr=recipe["lr"], kd_alpha=recipe["kd_alpha"], schedule="cosine")


def folder(p: config.Profile, recipe: dict) -> Path:
    """Where the runs fine-tuned with ``recipe`` live (so a changed recipe never reuses them)."""
    return artifacts.finetuned(p, f"routes_{name(recipe)}").path


def search(baseline: nn.Module, lrp_scores: dict, d: Data, p: config.Profile, steps: int) -> pd.DataFrame:
    """Fine-tune LRP's network at ``p.recipe_fraction`` with every recipe of :func:`grid`."""
    rows = []
    for r in grid(p):
        row = routes.run(COMPUTE, LRP, p.recipe_fraction, p.seed, baseline, lrp_scores, d,
                         apply(p, r), folder(p, r), steps, baseline)
        rows.append({"recipe": name(r), **row})
    return pd.DataFrame(rows)


def choose(table: pd.DataFrame) -> dict:
    """The recipe with the best validation accuracy among the runs that did not diverge
    (reads the ``lr``, ``kd_alpha``, ``status`` and ``val_acc`` columns only)."""
    try:
        best = stats.select_best(table)
    except ValueError:
        raise ValueError("every recipe diverged; lower finetune_lrs in the profile") from None
    return {"lr": float(best["lr"]), "kd_alpha": float(best["kd_alpha"])}
