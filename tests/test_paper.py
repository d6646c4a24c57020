"""The report's own setting end to end: notebooks 01-08 on the ``paper`` profile's real model and
code path (torchvision VGG-16 at 64x64, 134,670,244 parameters, the report's allocation, every
criterion, every route, fine-tuning, int8) on a per-class subset of the real CIFAR-100, with
tiny overrides given as a user gives them (``-p``, ``profile_overrides``). The ImageNet weights
are a generated file with torchvision's keys and shapes in a temporary ``$TORCH_HOME`` hub
cache: the offline path is the one exercised."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torchvision
import yaml
from conftest import staged_cifar

from helpers.core import config

GIB = 1 << 30
BUDGET = 4 * GIB
TORCHVISION_FILE = "vgg16-397923af.pth"

TINY = {
    "subset_per_class": 2,
    "max_sparsity": 0.8, "step": 0.8, "chosen_sparsity": 0.8, "sweep_ratios": [0.3],
    "schedules": ["oneshot"], "calibration_batches": 1,
    "profile_overrides": {  # every notebook reads these
        "epochs": 1, "eval_batch_size": 100, "ref_per_class": 1, "full_width_benchmark": False,
        "lowdata_ref_sizes": [1], "lowdata_seeds": 1, "lowdata_fractions": [0.2, 0.4], "lowdata_sparsities": [0.3, 0.6],
        "lowdata_eval_per_class": 1, "lowdata_confirm_per_class": 0, "lowdata_recal_batches": 1,
        "seeds": 1, "finetune_epochs": 1.0, "finetune_lrs": [0.001], "finetune_kd_alphas": [0.9],
        "headline_fractions": [0.3], "headline_sparsities": [0.5], "weight_bits": [8], "compile_quantized": False,
        "latency_budget_s": 1.0},
}
"""The fewest images, steps and points that still run every criterion on every route."""
SUBSET = config.get_profile("paper", subset_per_class=TINY["subset_per_class"], **TINY["profile_overrides"])


def report_recipe_parameters(state: dict, sparsity: float, margin: float) -> int:
    """Parameters of torchvision VGG-16 (100 classes, 64x64) after the report's recipe, computed
    from the weights ``state`` without the series' code: one global magnitude threshold over
    every Conv2d and Linear weight (``torch.kthvalue``), each filter layer's sparsity minus
    ``margin`` its fraction of filters removed (every conv, the two hidden linears), rounded
    as Torch-Pruning rounds."""
    names = [k for k in state if k.endswith(".weight")]
    flat = torch.cat([state[k].abs().flatten() for k in names])
    k = round(sparsity * flat.numel())
    threshold = torch.kthvalue(flat, k).values if k else -1.0
    del flat
    kept, params, c_in = {}, 0, 3
    for i, name in enumerate(names):
        w = state[name]
        layer_sparsity = float((w.abs() <= threshold).sum()) / w.numel()
        out = w.shape[0]
        if i < len(names) - 1:  # the class layer keeps its outputs
            ratio = min(max(layer_sparsity - margin, 0.0), 0.99)
            out = max(1, round(out * (1 - ratio)))
        kept[name] = out
        fan_in = c_in * w[0].numel() // w.shape[1] if w.dim() == 4 else \
            (c_in * 49 if w.shape[1] == 512 * 49 else c_in)  # the first linear reads 7x7 per channel
        params += out * fan_in + out
        c_in = out
    return params


@pytest.fixture
def generated_imagenet_weights(tmp_path):
    """A torchvision VGG-16 state dict with random weights (seeded) where torchvision caches
    the ImageNet file: ``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``."""
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16().state_dict(), home / "hub" / "checkpoints" / TORCHVISION_FILE)
    return home


@pytest.mark.slow
@pytest.mark.paper
@pytest.mark.skipif(staged_cifar() is None, reason="LRP_DATA_DIR does not point at CIFAR-100")
def test_the_paper_profile_runs_notebooks_01_to_08_on_a_subset(tmp_path, generated_imagenet_weights):
    art = tmp_path / "artifacts"
    env = {**os.environ, "TORCH_HOME": str(generated_imagenet_weights), config.ARTIFACTS_ENV: str(art),
           config.DEVICE_ENV: "cpu"}
    args = [x for name, value in TINY.items() for x in ("-p", name, yaml.safe_dump(value, default_flow_style=True))]
    cmd = [sys.executable, "-m", "helpers.tools.run", "--profile", "paper", "--only",
           *[f"0{i}" for i in range(1, 9)], *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=config.REPO_ROOT)
    print(out.stdout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    peak = [float(line.split("largest kernel so far ")[1].split()[0]) for line in out.stdout.splitlines()
            if "largest kernel so far" in line]
    print(f"paper profile, notebooks 01-08 on {TINY['subset_per_class']} image(s) per class: "
          f"peak resident memory of a kernel {max(peak):.2f} GiB (budget {BUDGET / GIB:.0f} GiB)")
    assert len(peak) == 8
    folder = SUBSET.figures / "notebooks"
    assert sorted(nb.name[:2] for nb in folder.glob("0[1-8]_*.ipynb")) == [f"0{i}" for i in range(1, 9)]

    baseline = torch.load(art / SUBSET.folder_name / "baseline" / "model.pt", weights_only=True)
    expected = report_recipe_parameters(baseline["model"], SUBSET.report_sparsity, SUBSET.report_margin)
    report_rows = pd.read_csv(SUBSET.figures / "structured_allocations.csv").query("allocation == 'report'")
    assert set(report_rows["parameters"]) == {expected}
    assert max(peak) * GIB <= BUDGET, f"a kernel peaked at {max(peak):.2f} GiB, over the {BUDGET / GIB:.0f} GiB budget"


def test_the_independent_recipe_count_matches_the_report_arithmetic():
    """The test's own count of the report's recipe agrees with notebook 08's arithmetic on the
    same random weights (13,810,009 parameters; tests/test_budgets.py)."""
    from helpers.core import models
    torch.manual_seed(0)
    model = models.build_model(models.vgg16_spec())
    assert report_recipe_parameters(model.state_dict(), 0.8, 0.01) == 13_810_009
