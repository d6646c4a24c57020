"""Size, parameters, FLOPs and latency of a model, measured rather than estimated."""
from __future__ import annotations

import io
import time
from collections.abc import Hashable

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse
from torch.utils.flop_counter import FlopCounterMode

from . import config
from .models import cpu_copy, cpu_state, has_batchnorm

MB = 1e6          # decimal megabyte: sizes are reported in MB (10^6 bytes)
MIB = 2 ** 20     # and in MiB (2^20 bytes) beside them


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def nonzero_parameters(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def state_dict_bytes(state: dict) -> int:
    """Bytes that ``torch.save(state)`` writes: the model's size on disk (counted as written,
    not held in memory)."""
    counter = _ByteCounter()
    torch.save(state, counter)
    return counter.n


class _ByteCounter(io.RawIOBase):
    """A write-only stream that keeps the count of bytes written and nothing else."""

    n = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.n += len(b)
        return len(b)


def size_on_disk(model: nn.Module) -> dict:
    """Serialized size of the state dict, in bytes, MB and MiB."""
    n = state_dict_bytes(cpu_state(model))
    return {"bytes": n, "MB": n / MB, "MiB": n / MIB}


def flops(model: nn.Module, input_size: int = 32) -> int:
    """FLOPs of one forward pass on one image, counted by ``torch.utils.flop_counter``.

    The counter reports 2 FLOPs per multiply-accumulate (convolutions and matmuls).
    """
    model = model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, input_size, input_size, device=device))
    return int(counter.get_total_flops())


def cost(model: nn.Module, input_size: int = 32, baseline: nn.Module | None = None) -> dict:
    """The cost of ``model`` in the one vocabulary every table uses: ``parameters``, ``flops``
    (one image), ``size_MB`` (float32 state dict); with ``baseline``, also its reduction factors
    ``compression_x`` (parameters) and ``flops_x``."""
    out = {"parameters": parameters(model), "flops": flops(model, input_size), "size_MB": size_on_disk(model)["MB"]}
    if baseline is not None:
        out.update(compression_x=parameters(baseline) / out["parameters"],
                   flops_x=flops(baseline, input_size) / out["flops"])
    return out


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in inference form: each BatchNorm folded into the convolution
    before it (``torch.fx`` graph rewrite), as models are deployed. Same outputs in eval mode.
    A model without BatchNorm (torchvision VGG-16) is already in that form: ``model`` itself, in
    eval mode, rather than a copy of its weights."""
    if not has_batchnorm(model):
        return model.eval()
    return fuse(model.eval())


LATENCY_BUDGET_S = config.Profile.latency_budget_s
"""Seconds one side-by-side measurement aims at (the profiles' ``latency_budget_s``). Where the
warm-up and timed rounds would not fit (torchvision VGG-16 at 64x64 takes seconds per batch of
256), the first round, timed, is the only warm-up and the timed rounds are cut to what fits, never
below :data:`MIN_ROUNDS`. Small models keep every round."""
MIN_ROUNDS = 3


def latency(model: nn.Module, batch: int, input_size: int = 32, threads: int = 2,
            repeats: int = 10, warmup: int = 2) -> float:
    """Median CPU wall time (seconds) of one forward pass on ``batch`` images."""
    return latency_side_by_side({"model": model}, batch, input_size, threads, repeats, warmup)["model"]


def latency_pair(model: nn.Module, input_size: int = 32, budget_s: float = LATENCY_BUDGET_S) -> dict:
    """Median CPU latency at batch 1 and batch 256, 2 threads, in milliseconds."""
    return latency_pairs({"model": model}, input_size, budget_s)["model"]


def latency_pairs(models: dict[Hashable, nn.Module], input_size: int = 32,
                  budget_s: float = LATENCY_BUDGET_S) -> dict[Hashable, dict]:
    """:func:`latency_pair` of each model, all measured side by side (:func:`latency_side_by_side`,
    each batch size within ``budget_s``), so that a slow stretch of a shared machine hits every
    model alike and their ratios hold."""
    b1 = latency_side_by_side(models, 1, input_size, repeats=30, budget_s=budget_s)
    b256 = latency_side_by_side(models, 256, input_size, repeats=5, budget_s=budget_s)
    return {name: {"latency_b1_ms": 1e3 * b1[name], "latency_b256_ms": 1e3 * b256[name]} for name in models}




@torch.no_grad()
def latency_side_by_side(models: dict[Hashable, nn.Module], batch: int, input_size: int = 32,
                         threads: int = 2, repeats: int = 10, warmup: int = 2,
                         budget_s: float = LATENCY_BUDGET_S) -> dict[Hashable, float]:
    """Median CPU wall time (seconds) of one forward pass of each model (a CPU copy of any model
    that is elsewhere: CPU latency is what this measures), measured in interleaved rounds
    (each round runs every model once), so that a slower or faster
    stretch of the machine affects all models alike; ``repeats`` timed rounds after ``warmup``
    rounds (at least one: the first, timed, sizes the rest), fewer where they would not fit in
    ``budget_s`` (:data:`LATENCY_BUDGET_S`)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        models = {name: cpu_copy(m) for name, m in models.items()}  # never moves the caller's model
        for m in models.values():
            m.eval()  # not chained: exported graphs return None from eval()
        x = torch.randn(batch, 3, input_size, input_size)
        first = _round(models, x)
        warmup, repeats = rounds(sum(first.values()), warmup, repeats, budget_s)
        for _ in range(warmup):
            _round(models, x)
        times = {name: [] for name in models}
        for _ in range(repeats):
            for name, t in _round(models, x).items():
                times[name].append(t)
    finally:
        torch.set_num_threads(old)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def rounds(round_s: float, warmup: int, repeats: int, budget_s: float) -> tuple[int, int]:
    """Warm-up rounds still to run after the first (timed) one, and timed rounds."""
    if round_s * (warmup - 1 + repeats) <= budget_s:
        return max(warmup - 1, 0), repeats
    return 0, min(repeats, max(MIN_ROUNDS, int(budget_s / round_s)))


def _round(models: dict[Hashable, nn.Module], x: torch.Tensor) -> dict[Hashable, float]:
    """One forward pass of each model in turn, each timed."""
    times = {}
    for name, m in models.items():
        start = time.perf_counter()
        m(x)
        times[name] = time.perf_counter() - start
    return times
