"""The speed benchmark of notebook 04: does removing half the FLOPs halve CPU latency?

Models pruned uniformly to about half the FLOPs are timed side by side with their baseline
(2 threads, interleaved rounds, medians), as trained and with BatchNorm folded. The command
line (``python -m helpers.studies.benchmark``) runs it on a freshly initialised VGG-16-BN, without data;
``--training`` times a training step instead, contiguous against channels-last convolutions.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import pandas as pd
import torch
from torch import nn

from ..core import config, measure, models
from ..core.vocabulary import UNIFORM
from ..methods import pruning
from ..methods.criteria import weight_magnitude
from ..reporting.report import speed_finding
from ..methods.distillation import teacher_logits
from ..methods.training import train_step


def half_flops_model(model: nn.Module, filter_scores: dict, input_size: int,
                     round_to: int = 1) -> nn.Module:
    """``model`` pruned uniformly (the same fraction of every layer's filters, kept counts
    rounded to multiples of ``round_to``) at the fraction, 20 to 40 % in 1 % steps, whose
    FLOPs are nearest half the baseline's: about 29 % for VGG-16-BN, since a conv's cost
    scales with (kept inputs) x (kept outputs)."""
    base = measure.flops(model, input_size)
    best, best_gap, seen = None, float("inf"), set()
    for percent in range(20, 41):
        counts = pruning.keep_counts(model, pruning.uniform_allocation(model, percent / 100), round_to)
        key = tuple(counts.values())
        if key in seen:  # rounding maps neighbouring fractions to the same counts
            continue
        seen.add(key)
        pruned = pruning.prune_filters(model, filter_scores, counts, input_size)
        gap = abs(base / measure.flops(pruned, input_size) - 2)
        if gap < best_gap:
            best, best_gap = pruned, gap
    return best


def half_flops_models(model: nn.Module, filter_scores: dict, input_size: int,
                      round_to: int = 16) -> dict[str, nn.Module]:
    """The speed benchmark's pruned models: uniform, and uniform with kept counts aligned to
    ``round_to`` (16: the AVX-512 float vector width)."""
    return {UNIFORM: half_flops_model(model, filter_scores, input_size),
            f"uniform, multiples of {round_to}": half_flops_model(model, filter_scores, input_size, round_to)}


FORMS = {"eager": lambda m: m, "BatchNorm folded": measure.fold_batchnorm}


def speed_benchmark(model: nn.Module, pruned: dict[str, nn.Module], input_size: int,
                    label: str = "baseline", budget_s: float = measure.LATENCY_BUDGET_S) -> pd.DataFrame:
    """Latency of each pruned model against the baseline, all measured side by side
    (interleaved rounds, 2 threads), in each of ``FORMS`` (as trained, and with BatchNorm
    folded into the convolutions), with the FLOPs ratio the speed-up should follow; each batch
    size within ``budget_s`` (:func:`helpers.core.measure.latency_side_by_side`)."""
    base_flops = measure.flops(model, input_size)
    cost = {name: {"filters_removed": pruning.filters_removed(model, pruning.kept_filters(m)),
                   "flops_ratio": base_flops / measure.flops(m, input_size)} for name, m in pruned.items()}
    nets = {"baseline": model, **pruned}
    timed = {(form, name): to_form(m) for form, to_form in FORMS.items() for name, m in nets.items()}
    rows = []
    for batch, repeats in ((1, 100), (256, 7)):
        t = measure.latency_side_by_side(timed, batch, input_size, repeats=repeats, budget_s=budget_s)
        for form in FORMS:
            for name in pruned:
                speedup = t[(form, "baseline")] / t[(form, name)]
                rows.append({"model": label, "pruned": name, "form": form, "batch": batch, **cost[name],
                             "baseline_ms": 1e3 * t[(form, "baseline")], "pruned_ms": 1e3 * t[(form, name)],
                             "speedup": speedup, "speedup_over_flops_ratio": speedup / cost[name]["flops_ratio"]})
    return pd.DataFrame(rows)


def untrained_speed_benchmark(input_size: int, seed: int = 0, width: float = 1.0) -> pd.DataFrame:
    """The same benchmark on a freshly initialised (seeded) VGG-16-BN of ``width`` (1.0: full
    width, the paper_scratch architecture), pruned by its weights' L1 norms. Latency does not
    depend on weight values, so no training or data is needed to time it."""
    torch.manual_seed(seed)
    model = models.build_model(models.vgg16_bn_spec(width)).eval()
    pruned = half_flops_models(model, weight_magnitude(model)["filter"], input_size)
    return speed_benchmark(model, pruned, input_size, label=f"VGG-16-BN width {width} (untrained)")


def training_step_benchmark(width: float = 0.25, input_size: int = 32, batch: int = 128,
                            rounds: int = 7, steps: int = 3, seed: int = 0) -> pd.DataFrame:
    """Seconds per training step of VGG-16-BN (``width``) on 2 threads, with contiguous weights
    and with channels-last ones (:func:`models.channels_last`, what training uses), for the
    label loss and for distillation (a teacher of the same shape). Identical seeded networks
    are timed in interleaved rounds of ``steps`` steps (medians, the first round dropped): the
    series' own step (:func:`training.train_step`), distillation with the teacher's forward pass
    in every step (what a run costs without the per-seed cache of :mod:`helpers.methods.distillation`)."""
    profile = dataclasses.replace(config.get_profile("cpu"), kd_alpha=0.9)  # labels: no teacher given
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(batch, 3, input_size, input_size, generator=gen), torch.randint(0, 100, (batch,), generator=gen)
    rows = []
    try:
        for loss in ("labels", "distillation"):
            nets = {}
            for layout in ("contiguous", "channels-last"):
                torch.manual_seed(seed)
                student, teacher = (models.build_model(models.vgg16_bn_spec(width)) for _ in range(2))
                opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, nesterov=True)
                nets[layout] = (student.train(), opt, teacher.eval() if loss == "distillation" else None)
            times = {layout: [] for layout in nets}
            with models.channels_last(*nets["channels-last"][::2]):
                for _ in range(rounds):
                    for layout, (student, opt, teacher) in nets.items():
                        start = time.perf_counter()
                        for _ in range(steps):
                            soft = None if teacher is None else teacher_logits(teacher, x)
                            train_step(student, opt, x, y, profile, soft)
                        times[layout].append((time.perf_counter() - start) / steps)
            t = {layout: statistics.median(v[1:]) for layout, v in times.items()}
            rows.append({"width": width, "batch": batch, "loss": loss, "contiguous_s": t["contiguous"],
                         "channels_last_s": t["channels-last"], "channels_last_img_per_s": batch / t["channels-last"],
                         "speedup": t["contiguous"] / t["channels-last"]})
    finally:
        torch.set_num_threads(old)
    return pd.DataFrame(rows)


def reference_step_seconds(p: config.Profile, rounds: int = 11, steps: int = 3, seed: int = 0) -> float:
    """The machine's speed now: median seconds of one optimizer step of the profile's freshly
    built network (:func:`training.train_step`, label loss, channels-last, 2 threads) on a random
    batch of the profile's size, in ``rounds`` of ``steps`` steps, the first round dropped (about
    7 s on the cpu profile). The batch runner records it with every invocation, so that wall
    times measured on days the machine ran at different speeds can be compared: on this VM the
    same step measured 0.195 s in one session and 0.205-0.221 s in a later one, and snapshots a
    minute apart differ by up to 15 %, so it indicates the day's speed; it does not calibrate."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(seed)
        model = models.build_model(models.spec_for(p)).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(p.batch_size, 3, p.input_size, p.input_size, generator=gen)
        y = torch.randint(0, models.spec_for(p)["num_classes"], (p.batch_size,), generator=gen)
        times = []
        with models.channels_last(model):
            for _ in range(rounds):
                start = time.perf_counter()
                for _ in range(steps):
                    train_step(model, opt, x, y, p)
                times.append((time.perf_counter() - start) / steps)
        return statistics.median(times[1:])
    finally:
        torch.set_num_threads(old)


TRAINING_WIDTH = 0.25
"""``--training``'s default width: the cpu profile's."""


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """``python -m helpers.studies.benchmark``: the speed benchmark alone, printed (about a minute)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--width", type=float, default=None,
                        help=f"VGG-16-BN width multiplier (default 1.0; with --training {TRAINING_WIDTH}, the cpu "
                             "profile's)")
    parser.add_argument("--input-size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--training", action="store_true",
                        help="time training steps, contiguous against channels-last weights, instead")
    parser.add_argument("--batch", type=int, default=128, help="with --training: images per step (default 128)")
    args = parser.parse_args(argv)
    if args.width is None:
        args.width = TRAINING_WIDTH if args.training else 1.0
    if not 0 < args.width <= 4 or args.input_size < 32 or args.batch < 2:
        parser.error(f"need 0 < --width <= 4, --input-size >= 32 (five 2x poolings) and --batch >= 2 "
                     f"(batch norm), got --width {args.width} --input-size {args.input_size} --batch {args.batch}")
    if args.training:
        bench = training_step_benchmark(args.width, args.input_size, args.batch)
        print(bench.round(3).to_string(index=False))
        return bench
    bench = untrained_speed_benchmark(args.input_size, width=args.width)
    print(bench.round(3).to_string(index=False))
    print(speed_finding(bench))
    return bench


if __name__ == "__main__":
    main()
