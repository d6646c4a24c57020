"""The stored smoke outputs pass nbval with another CPU's arithmetic, and the smoke numbers that
nbval no longer compares digit by digit are held by invariants that hold on any CPU."""
import json
import os
import re
import subprocess
import sys

import nbformat
import pytest
import torch

from helpers.core import config
from helpers.methods import finetune, training
from helpers.studies import routes

CFG = config.REPO_ROOT / "tests" / "nbval_sanitize.cfg"
EMULATED = ["01_baseline_training", "02_relevance", "06_fine_tuning"]


def other_cpu() -> dict[str, str]:
    """Environment variables that give this machine another CPU's arithmetic: one vector ISA below
    its widest (AVX-512 -> AVX2 for oneDNN, MKL and ATen; AVX2 -> ATen's scalar kernels, which
    change its reductions and leave oneDNN's convolutions their speed)."""
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        return {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    return {"ATEN_CPU_CAPABILITY": "default"}


def nbval(notebooks: list[str], env: dict) -> subprocess.CompletedProcess:
    """nbval of the stored ``notebooks`` in a fresh process with ``env`` (one kernel each)."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
                           "--nbval-sanitize-with", str(CFG),
                           *[str(config.NOTEBOOKS_DIR / f"{n}.ipynb") for n in notebooks]],
                          env=env, capture_output=True, text=True, cwd=config.REPO_ROOT)


def stored_baseline() -> tuple[float, float]:
    """Test accuracy and loss of the smoke baseline in notebook 01's stored outputs."""
    nb = nbformat.read(config.NOTEBOOKS_DIR / "01_baseline_training.ipynb", as_version=4)
    text = next(o["data"]["text/plain"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if "test_loss" in o.get("data", {}).get("text/plain", ""))
    return tuple(float(re.search(rf"^{k}\s+(\S+)$", text, re.MULTILINE).group(1)) for k in ("test_acc", "test_loss"))


@pytest.mark.slow
def test_stored_outputs_pass_nbval_with_another_cpus_arithmetic(tmp_path):
    """01 and 02 also on one thread (another split of every parallel sum), 06 on the machine's
    threads (it fine-tunes 50 networks)."""
    env = {**os.environ, **other_cpu(), config.ARTIFACTS_ENV: str(tmp_path), config.PROFILE_ENV: "smoke",
           "TQDM_DISABLE": "1"}
    for notebooks, threads in ((EMULATED[:2], {"OMP_NUM_THREADS": "1"}), (EMULATED[2:], {})):
        run = nbval(notebooks, {**env, **threads})
        assert run.returncode == 0, f"with {other_cpu()} {threads}:\n{run.stdout[-6000:]}"
    metrics = json.loads((tmp_path / "smoke" / "baseline" / "metrics.json").read_text())
    emulated = (metrics["test_acc"], round(metrics["test_loss"], 4))
    assert emulated != stored_baseline(), f"{other_cpu()} trained the stored network again: the check tested nothing"


def test_smoke_baseline_learns_far_above_chance(trained_smoke):
    """Measured 49-86 % on AVX2, AVX-512 and emulated CPUs (chance: 1 %)."""
    p, d, model = trained_smoke
    assert training.evaluate(model, d.test, p.eval_batch_size, p.input_size)["acc"] >= 25.0


def test_fine_tuning_recovers_a_pruned_network(trained_smoke, tmp_path):
    """Pruning 40 % of the filters costs accuracy; the smoke budget of fine-tuning wins some back."""
    p, d, model = trained_smoke
    s = routes.seed_scores(model, d, p, p.seed, ["weight"], tmp_path / "scores")["weight"]
    pruned = routes.structured(model, s, 0.4, p)
    before = training.evaluate(pruned, d.val, p.eval_batch_size, p.input_size)["acc"]
    tuned, _ = finetune.one_shot(pruned, d, p, tmp_path / "ft", finetune.budget_steps(d, p, p.finetune_epochs), p.arch)
    after = training.evaluate(tuned, d.val, p.eval_batch_size, p.input_size)["acc"]
    assert after >= before + 5.0, (before, after)
