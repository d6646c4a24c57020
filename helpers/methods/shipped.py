"""The shipped baseline: a profile's trained baseline committed beside its results.

``figures/<profile>/baseline_model.pt`` is the self-describing model file notebook 01 writes
(:func:`training.save_model`: spec, weights, the profile that trained it, its metrics and
history), and ``baseline_manifest.json`` beside it holds its sha256. Notebook 01 uses it instead
of training when the file is intact and was trained with the settings the profile asks for now,
and says so; otherwise it says why not and trains (``-p retrain true`` trains in any case).
``python -m helpers.methods.shipped cpu`` ships the profile's trained baseline from
``artifacts/``.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import platform
import shutil
import sys
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..core import artifacts, checkpoint, config, models
from . import training

MODEL, MANIFEST = "baseline_model.pt", "baseline_manifest.json"
MAX_BYTES = 4_000_000
SETTINGS = ("arch", "width", "pretrained", "input_size", "dataset", "val_per_class", "subset_per_class", "epochs",
            "batch_size", "lr", "momentum", "weight_decay", "label_smoothing", "schedule", "warmup", "seed")
"""The profile fields a shipped baseline must have been trained with to stand for a training run."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def problem(p: config.Profile, spec: dict) -> str:
    """Why the profile's shipped baseline cannot be used (empty when it can)."""
    path, manifest = p.figures / MODEL, p.figures / MANIFEST
    if not path.exists() or not manifest.exists():
        return f"no shipped baseline for the {p.name} profile ({MODEL} and {MANIFEST} in figures/{p.name}/)"
    try:
        want = checkpoint.load_json(manifest)["sha256"]
    except (checkpoint.CheckpointError, KeyError, TypeError) as err:
        return f"{manifest} is unreadable ({err})"
    where = f"figures/{p.name}/{MODEL}"
    if sha256(path) != want:
        return f"{where} does not match the sha256 in {manifest.name}: the file is damaged or was replaced"
    try:
        obj = checkpoint.load(path, kind="model")
    except checkpoint.CheckpointError as err:
        return str(err)
    if obj.get("spec") != spec:
        return f"{where} holds another network ({obj.get('spec')}) than the profile builds ({spec})"
    saved = obj.get("profile", {})
    default = {f.name: f.default for f in dataclasses.fields(config.Profile)}  # a field newer than the file
    changed = [k for k in SETTINGS if saved.get(k, default[k]) != getattr(p, k)]
    if changed:
        return f"{where} was trained with other settings ({', '.join(changed)}) than the profile's now"
    return ""


def train_or_load(model: nn.Module, data, p: config.Profile, state_path: Path, spec: dict,
                  retrain: bool = False) -> pd.DataFrame:
    """Notebook 01's baseline: the shipped one's weights and history when :func:`problem` finds
    none and ``retrain`` is false, else :func:`training.fit`. Prints which, and why."""
    why = "retrain is set" if retrain else problem(p, spec)
    if why:
        print(f"training the baseline: {why}")
        return training.fit(model, data, p, state_path, spec)
    obj = checkpoint.load(p.figures / MODEL, kind="model")
    model.load_state_dict(obj["model"])
    print(f"using the shipped baseline {p.figures.name}/{MODEL} (sha256 checked; -p retrain true trains afresh)")
    return pd.DataFrame(obj["history"])


def baseline(p: config.Profile) -> artifacts.Artifact:
    """The baseline a later notebook loads: the one notebook 01 left in ``artifacts/`` when it
    ran, else the shipped one when :func:`problem` finds none (so the explorer opens on a fresh
    clone without training), else the missing ``artifacts/`` file, whose error says to run 01."""
    ran = artifacts.baseline(p)
    if ran.exists() or problem(p, models.spec_for(p)):
        return ran
    return artifacts.Artifact(p.figures / MODEL, ran.producer)


def ship(p: config.Profile) -> Path:
    """Copy the profile's trained baseline from ``artifacts/`` to ``figures/<profile>/`` with its
    manifest; refuse a file above :data:`MAX_BYTES`."""
    source = artifacts.baseline(p).path
    if not source.exists():
        raise checkpoint.CheckpointError(f"{source} is missing: run notebook 01 of the {p.name} profile first")
    if source.stat().st_size > MAX_BYTES:
        raise ValueError(f"{source} is {source.stat().st_size:,} bytes; a shipped baseline may have {MAX_BYTES:,}")
    target = p.figures / MODEL
    checkpoint.atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    obj = checkpoint.load(target, kind="model")
    checkpoint.save_json({"file": MODEL, "sha256": sha256(target), "profile": p.name,
                          "metrics": {k: obj["metrics"][k] for k in ("test_acc", "test_loss", "parameters", "epochs")
                                      if k in obj.get("metrics", {})},
                          "machine": _machine(), "shipped": datetime.date.today().isoformat()}, p.figures / MANIFEST)
    return target


def _machine() -> str:
    """The machine shipping runs on, as torch sees it (ship right after 01 trains, so it is the one that
    trained: arithmetic differs by CPU kind)."""
    return f"{platform.machine()}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, " \
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"


if __name__ == "__main__":
    print("shipped", ship(config.get_profile(sys.argv[1] if len(sys.argv) > 1 else "cpu")))
