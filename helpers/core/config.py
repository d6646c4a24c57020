"""Paths, profiles and seeds: the one place every notebook takes its settings from.

Importing this module creates no folders and reads no data; functions do the work.
"""
from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .vocabulary import COMPUTE, SIZE

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
FIGURES_ROOT = REPO_ROOT / "figures"

PROFILE_ENV = "LRP_PROFILE"
"""Environment variable naming the profile when a notebook's ``profile`` parameter is empty."""
DATA_ENV = "LRP_DATA_DIR"
"""Environment variable pointing at the folder that holds ``cifar-100-python/``."""
ARTIFACTS_ENV = "LRP_ARTIFACTS"
"""Environment variable overriding the artifacts root (default ``artifacts/`` in the repo)."""
DEVICE_ENV = "LRP_DEVICE"
"""Environment variable naming the device when the profile's ``device`` is empty."""
DEFAULT_PROFILE = "cpu"


@dataclass(frozen=True)
class Profile:
    """Every setting of one run of the series. Profiles differ only in these values."""

    name: str
    dataset: str = "cifar100"          # cifar100 | synthetic (generated, official format)
    arch: str = "vgg16_bn"             # vgg16_bn (CIFAR VGG-16-BN) | vgg16 (torchvision)
    width: float = 0.25                # channel multiplier of vgg16_bn
    input_size: int = 32               # images are resized to this before the network
    pretrained: bool = False           # ImageNet weights (vgg16 only)
    weights_file: str = ""             # ImageNet VGG-16 weights file; empty: torch's hub cache, else download
    device: str = ""                   # cpu | cuda | cuda:N; empty: $LRP_DEVICE, else cuda when present
    val_per_class: int = 100           # validation images held out per class (100: as many as the test split)
    subset_per_class: int = 0          # a quick try: this many images per class in each split (validation in place
    #                                    of val_per_class; test: at most), written apart as <profile>_subset<N>; 0: all
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1                    # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    kd_alpha: float = 0.0              # weight of the distillation term when a teacher is given (0: labels only)
    kd_temperature: float = 4.0        # softmax temperature of knowledge distillation (Hinton et al.)
    schedule: str = "onecycle"         # onecycle | cosine
    eval_batch_size: int = 500
    seed: int = 0
    synthetic_train_per_class: int = 0  # synthetic dataset only
    synthetic_test_per_class: int = 0
    finetune_epochs: float = 0.5       # budget of every fine-tuned run, in epochs of optimizer steps
    finetune_lrs: tuple = (0.003, 0.01, 0.03, 0.1)  # peak learning rates tried for the one fine-tuning recipe (cosine)
    finetune_kd_alphas: tuple = (0.0, 0.9)     # distillation weights tried for it (0: labels only)
    warmup: float = 0.1                # cosine schedule: fraction of the steps spent warming up linearly
    seeds: int = 3                     # seeds of every fine-tuned point (reference images, data order, random)
    compute_seeds: int = 0             # compute route: seeds per point, where LRP's comparisons need more; 0: seeds
    size_seeds: int = 0                # size route: seeds per point, likewise; 0: seeds
    recipe_fraction: float = 0.3       # the recipe is chosen on LRP's network at this fraction of filters removed
    headline_fractions: tuple = (0.15, 0.3)  # compute route: fractions of filters removed
    # size route: global weight sparsities (brackets each crossing of -1 point; 0.75: a 12x file)
    headline_sparsities: tuple = (0.5, 0.6, 0.7, 0.75)
    weight_bits: tuple = (6, 8)        # size and combined routes: int8 weight grids of each run (8: full int8)
    sweep_stop_points: float = 10.0    # a criterion this far below the baseline (first seed) skips larger points;
                                       # 0: never
    headline_max_drop: float = 1.0     # headline: the largest compression at most this many points below the baseline
    report_sparsity: float = 0.8       # the report's allocation: weights pruned globally to this sparsity ...
    report_margin: float = 0.01        # ... and each layer's sparsity minus this is its fraction of filters removed
    iterative_step: float = 0.05       # fraction of the original filters removed per iterative step
    ref_per_class: int = 10            # reference (training) images per class for data-driven scores
    latency_budget_s: float = 30.0     # seconds each latency or score-timing measurement aims at (>= 3 timed rounds)
    compile_quantized: bool = True     # run quantized models through torch.compile (int8 kernels)
    compile_training: bool = False     # on CUDA, train through torch.compile(mode="reduce-overhead")
    full_width_benchmark: bool = True  # notebook 04 also times full-width VGG-16-BN (about 90 s)
    lowdata_ref_sizes: tuple = (1, 2, 5, 10, 50)   # notebook 05: reference images per class
    lowdata_seeds: int = 5                         # notebook 05: draws of each reference size
    lowdata_fractions: tuple = (0.1, 0.2, 0.3, 0.4)  # notebook 05: fractions of filters removed
    lowdata_sparsities: tuple = (0.2, 0.5, 0.8)      # notebook 05: unstructured sparsities
    lowdata_eval_per_class: int = 3                # notebook 05: validation images per class in each half
    lowdata_confirm_per_class: int = 10            # notebook 05: more per class, to confirm the screen (0: none)
    lowdata_recal_batches: int = 2                 # notebook 05: training batches per BatchNorm recalibration
    series_minutes: float = 0.0        # wall-time target of the whole series from scratch (REPORT.md); 0: none

    def __post_init__(self):
        validate(self)

    def seed_list(self, route: str = "") -> list[int]:
        """The seeds of every fine-tuned point; on the compute and size routes ``compute_seeds``
        and ``size_seeds`` of them when set (the first ``seeds`` are the other routes' seeds);
        ``"all"``: every seed any route uses."""
        n = {COMPUTE: self.compute_seeds, SIZE: self.size_seeds,
             "all": max(self.seeds, self.compute_seeds, self.size_seeds)}.get(route, 0) or self.seeds
        return list(range(self.seed, self.seed + n))

    @property
    def artifacts(self) -> Path:
        """Folder holding every large output of this profile (gitignored)."""
        return Path(os.environ.get(ARTIFACTS_ENV, REPO_ROOT / "artifacts")) / self.folder_name

    @property
    def figures(self) -> Path:
        """Folder holding this profile's committed figures and small tables."""
        return FIGURES_ROOT / self.folder_name

    @property
    def held_out_per_class(self) -> int:
        """Validation images per class: ``subset_per_class`` in a subset run, else ``val_per_class``."""
        return self.subset_per_class or self.val_per_class

    @property
    def folder_name(self) -> str:
        """The profile's name; a subset run (``subset_per_class``) writes apart, never over a full run."""
        return f"{self.name}_subset{self.subset_per_class}" if self.subset_per_class else self.name


_CHOICES = {
    "dataset": ("cifar100", "synthetic"),
    "arch": ("vgg16_bn", "vgg16"),
    "schedule": ("onecycle", "cosine"),
}
_POSITIVE = ("headline_max_drop", "latency_budget_s",
             "width", "input_size", "epochs", "batch_size", "lr", "eval_batch_size", "kd_temperature",
             "finetune_epochs", "iterative_step", "seeds", "ref_per_class", "lowdata_seeds",
             "lowdata_eval_per_class", "lowdata_recal_batches")
_TUPLES = {  # tuple field -> (item type, lowest, highest, lowest excluded, highest excluded)
    "lowdata_ref_sizes": (int, 1, None, False, False),
    "lowdata_fractions": ((int, float), 0, 1, True, True),
    "lowdata_sparsities": ((int, float), 0, 1, True, True),
    "finetune_lrs": ((int, float), 0, None, True, False),
    "finetune_kd_alphas": ((int, float), 0, 1, False, False),
    "headline_fractions": ((int, float), 0, 1, True, True),
    "headline_sparsities": ((int, float), 0, 1, True, True),
    "weight_bits": (int, 2, 8, False, False),
}
_NON_NEGATIVE = ("val_per_class", "subset_per_class", "sweep_stop_points", "series_minutes", "compute_seeds",
                 "size_seeds", "warmup", "momentum", "weight_decay", "label_smoothing", "seed", "kd_alpha",
                 "synthetic_train_per_class", "synthetic_test_per_class")

PROFILES: dict[str, dict] = {
    # CI and nbval: a generated dataset in the official format, a narrow net, 5 short epochs, 0.5-epoch fine-tuning.
    # No decision that shapes an output is left to the training trajectory (which differs from one CPU to
    # another): every point qualifies for the headline and every criterion runs every point.
    "smoke": dict(dataset="synthetic", headline_max_drop=100.0, sweep_stop_points=0.0,
                  width=0.125, epochs=5, batch_size=32, lr=0.1,
                  val_per_class=4, synthetic_train_per_class=24, synthetic_test_per_class=4,
                  eval_batch_size=200, finetune_epochs=0.5, finetune_lrs=(0.02,), seeds=2,
                  headline_fractions=(0.4,), headline_sparsities=(0.5,), iterative_step=0.25,
                  ref_per_class=2, compile_quantized=False, full_width_benchmark=False, weight_bits=(8,),
                  lowdata_ref_sizes=(1, 2), lowdata_seeds=2, lowdata_fractions=(0.1, 0.3),
                  lowdata_sparsities=(0.3, 0.6), lowdata_eval_per_class=1, lowdata_recal_batches=2,
                  lowdata_confirm_per_class=1),
    # The default: real CIFAR-100 on 2 CPU cores, VGG-16-BN at width 0.25.
    "cpu": dict(compute_seeds=5, size_seeds=4, series_minutes=300.0),
    # A GPU machine with internet: the original report's torchvision VGG-16 setup.
    "paper": dict(arch="vgg16", pretrained=True, input_size=64, width=1.0, epochs=20,
                  batch_size=64, lr=0.01, weight_decay=5e-4, schedule="cosine",
                  finetune_epochs=20.0, finetune_lrs=(0.0003, 0.001, 0.003), seeds=3,
                  compile_training=True),
    # The usual from-scratch full-width VGG-16-BN CIFAR-100 recipe (GPU).
    "paper_scratch": dict(width=1.0, epochs=200, batch_size=128, lr=0.1, schedule="cosine",
                          finetune_epochs=30.0, compile_training=True),
}


def validate(p: Profile) -> None:
    """Check types and ranges of every field; raise ``ValueError`` naming the bad one."""
    for f in dataclasses.fields(p):
        value = getattr(p, f.name)
        expected = {"str": str, "int": int, "float": (int, float), "bool": bool, "tuple": tuple}[f.type]
        if not isinstance(value, expected) or (f.type != "bool" and isinstance(value, bool)):
            raise ValueError(f"profile parameter {f.name!r} must be {f.type}, got {value!r}")
    for name, choices in _CHOICES.items():
        if getattr(p, name) not in choices:
            raise ValueError(f"profile parameter {name!r} is {getattr(p, name)!r}; "
                             f"valid values: {', '.join(choices)}")
    for name in _POSITIVE:
        if getattr(p, name) <= 0:
            raise ValueError(f"profile parameter {name!r} must be > 0, got {getattr(p, name)!r}")
    for name in _NON_NEGATIVE:
        if getattr(p, name) < 0:
            raise ValueError(f"profile parameter {name!r} must be >= 0, got {getattr(p, name)!r}")
    for name, rule in _TUPLES.items():
        _check_tuple(name, getattr(p, name), *rule)
    for name in ("lowdata_fractions", "lowdata_sparsities"):
        if len(getattr(p, name)) < 2:
            raise ValueError(f"profile parameter {name!r} needs at least two values: notebook 05 scores each "
                             f"curve by the area under it; got {getattr(p, name)!r}")
    if p.iterative_step > 1:
        raise ValueError(f"profile parameter 'iterative_step' must be <= 1, got {p.iterative_step}")
    if p.warmup >= 1:
        raise ValueError(f"profile parameter 'warmup' must be < 1, got {p.warmup}")
    if not 0 < p.report_sparsity <= 1 or not 0 <= p.report_margin < 1:
        raise ValueError(f"profile parameters 'report_sparsity' (in (0, 1]) and 'report_margin' (in [0, 1)) "
                         f"got {p.report_sparsity} and {p.report_margin}")
    for name in ("compute_seeds", "size_seeds"):
        if 0 < getattr(p, name) < p.seeds:
            raise ValueError(f"profile parameter '{name}' must be 0 (as many as seeds) or at least seeds ({p.seeds}): "
                             f"the combined route starts from both routes' seeds; got {getattr(p, name)}")
    if 8 not in p.weight_bits:
        raise ValueError(f"profile parameter 'weight_bits' must include 8 (the full int8 grid, each run's own "
                         f"measurement), got {p.weight_bits!r}")
    if not 0 < p.recipe_fraction < 1:
        raise ValueError(f"profile parameter 'recipe_fraction' must lie in (0, 1), got {p.recipe_fraction}")
    if p.kd_alpha > 1:
        raise ValueError(f"profile parameter 'kd_alpha' must be <= 1, got {p.kd_alpha}")
    if p.label_smoothing >= 1:
        raise ValueError(f"profile parameter 'label_smoothing' must be < 1, got {p.label_smoothing}")
    if p.device:
        parse_device(p.device)
    if p.dataset == "synthetic" and p.synthetic_train_per_class <= p.val_per_class:
        raise ValueError("synthetic_train_per_class must exceed val_per_class "
                         f"({p.synthetic_train_per_class} <= {p.val_per_class})")


def _check_tuple(name: str, values: tuple, kind, low, high, open_low, open_high) -> None:
    """A non-empty tuple of numbers of ``kind`` within the bounds, in increasing order."""
    ok = len(values) > 0 and all(isinstance(v, kind) and not isinstance(v, bool) for v in values)
    ok = ok and all((v > low if open_low else v >= low) for v in values) and \
        all(high is None or (v < high if open_high else v <= high) for v in values)
    if not ok or list(values) != sorted(set(values)):
        closing = ")" if open_high or high is None else "]"
        bounds = f"{'(' if open_low else '['}{low}, {'inf' if high is None else high}{closing}"
        raise ValueError(f"profile parameter {name!r} must be increasing distinct numbers in {bounds}, "
                         f"got {values!r}")


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The profile ``name`` (else ``$LRP_PROFILE``, else ``cpu``) with ``overrides`` applied.

    Overrides whose value is ``None`` are ignored, so a notebook can pass its parameters
    through unchanged and ``None`` means "the profile's default".
    """
    name = name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    valid = {f.name for f in dataclasses.fields(Profile)} - {"name"}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; "
                         f"valid parameters: {', '.join(sorted(valid))}")
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
    return Profile(name=name, **{**PROFILES[name], **given})


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def quiet() -> bool:
    """Progress bars off: in CI, or with ``TQDM_DISABLE`` set (nbval, stored notebook outputs)."""
    return bool(os.environ.get("CI") or os.environ.get("TQDM_DISABLE"))


def device(p: "Profile | None" = None) -> torch.device:
    """The device models are trained and scored on: the profile's ``device``, else
    ``$LRP_DEVICE``, else CUDA when present, else CPU. Helpers never move a model they are
    given; notebooks put each model here explicitly (``model.to(config.device(p))``)."""
    name = (p.device if p is not None else "") or os.environ.get(DEVICE_ENV, "")
    return parse_device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def parse_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a device that exists here; else a ``ValueError`` naming the fix."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; valid: cpu, cuda, cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but CUDA is not available here: use device 'cpu' "
                         f"(or leave device and ${DEVICE_ENV} empty to pick CUDA only where it exists)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev
