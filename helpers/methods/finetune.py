"""Fine-tuning pruned networks, one-shot or iteratively, on equal optimizer-step budgets.

One-shot: prune to the target once, then fine-tune for the whole budget.
Iterative (Yeom et al. 2021): remove a fixed fraction of the original filters, recompute the
scores on the current network, fine-tune briefly, repeat until the target is reached; the
budget is split evenly over the steps, so both schedules take the same number of optimizer
steps (``budget_steps``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from torch import nn

from ..core import artifacts, config, models, progress
from . import criteria, pruning
from ..core.data import Data, Split
from ..core.models import device_of
from .training import fit, load_model, save_model, steps_per_epoch


def budget_steps(d: Data, p: config.Profile, epochs: float) -> int:
    """Optimizer steps in ``epochs`` passes over the training split."""
    return max(1, round(epochs * steps_per_epoch(len(d.train), p.batch_size)))


def one_shot(pruned: nn.Module, d: Data, p: config.Profile, folder: Path, steps: int,
             arch: str, teacher: nn.Module | None = None, label: str = "") -> tuple[nn.Module, pd.DataFrame]:
    """Fine-tune an already pruned model for ``steps`` optimizer steps (resumable), distilling
    from ``teacher`` when ``p.kd_alpha > 0``; a diverged run raises ``DivergenceError`` naming
    the run (``label``, else the folder)."""
    spec = models.spec_of(pruned, arch)
    history = fit(pruned, d, p, Path(folder) / "train_state.pt", spec, max_steps=steps,
                  teacher=teacher, guard=label or f"one-shot fine-tuning in {Path(folder).name}")
    return pruned, history.assign(stage=1)


def iteration_targets(target_removed: float, step_fraction: float) -> list[float]:
    """Fraction of the original filters removed after each iterative step."""
    pruning._check_fraction("target_removed", target_removed)
    if not 0 < step_fraction <= 1:
        raise pruning.PruningError(f"step_fraction must lie in (0, 1], got {step_fraction!r}")
    k = max(1, math.ceil(round(target_removed / step_fraction, 9)))
    return [min(target_removed, (i + 1) * step_fraction) for i in range(k)]


@dataclass
class _Step:
    """One step of :func:`iterative`: prune the current network to ``goal`` of the original
    filters, fine-tune ``share`` steps; saved as ``step<index>.pt`` in ``folder`` and read back."""
    model: nn.Module
    original: nn.Module
    folder: Path
    index: int
    arch: str
    p: config.Profile

    @property
    def path(self) -> Path:
        return self.folder / f"step{self.index:02d}.pt"

    def prune_and_fit(self, ref: Split, criterion: str, goal: float, total: int, share: int, d: Data,
                      teacher: nn.Module | None, score_kwargs: dict) -> tuple:
        p, current = self.p, self.model
        s = criteria.compute_scores(current, ref, criterion, seed=p.seed, size=p.input_size, **score_kwargs)
        ratio = 1 - (1 - goal) * total / sum(pruning.kept_filters(current).values())  # of the current filters
        counts = pruning.global_counts(current, s["filter"], min(max(ratio, 0.0), 0.999))
        pruned = pruning.prune_filters(current, s["filter"], counts, p.input_size)
        if share == 0:
            return pruned, pd.DataFrame(), counts
        history = fit(pruned, d, p, self.folder / f"step{self.index:02d}_state.pt", models.spec_of(pruned, self.arch),
                      max_steps=share, teacher=teacher, guard=f"iterative step {self.index} in {self.folder.name}")
        return pruned, history, counts

    def save(self, step: tuple, path: Path) -> None:
        model, history, counts = step
        save_model(model, models.spec_of(model, self.arch), path, self.p, history=history.to_dict(orient="list"),
                   counts=counts, filters_removed=pruning.filters_removed(self.original, counts))

    def load(self, path: Path) -> tuple:
        model, obj = load_model(path, device=device_of(self.model))
        return model, pd.DataFrame(obj["history"]), obj.get("counts")


def iterative(model: nn.Module, d: Data, ref: Split, p: config.Profile, folder: Path,
              criterion: str, target_removed: float, step_fraction: float, steps: int,
              arch: str, teacher: nn.Module | None = None, **score_kwargs) -> tuple[nn.Module, pd.DataFrame]:
    """Prune ``step_fraction`` of the original filters at a time (global allocation on scores
    recomputed on the current network), fine-tuning ``steps / n_steps`` optimizer steps after
    each, until ``target_removed`` of the original filters are gone. Each finished step is
    saved, so an interrupted run resumes at the step it stopped in."""
    original, total = model, sum(pruning.kept_filters(model).values())
    targets = iteration_targets(target_removed, step_fraction)
    shares = [steps // len(targets) + (i < steps % len(targets)) for i in range(len(targets))]
    histories = []
    for i, (goal, share) in enumerate(zip(targets, shares), start=1):
        progress.line(f"iterative {criterion}: step {i}/{len(targets)}, to {goal:.0%} of the filters removed")
        step = _Step(model, original, Path(folder), i, arch, p)
        model, history, _ = artifacts.resumable(
            step.path, lambda: step.prune_and_fit(ref, criterion, goal, total, share, d, teacher, score_kwargs),
            step.save, step.load)
        histories.append(history.assign(stage=i))
    return model, pd.concat(histories, ignore_index=True)
