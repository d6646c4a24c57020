"""A run killed mid-training, damaged files, missing upstream artifacts, bad parameters."""
import lzma
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers.core import checkpoint, config, data, models
from helpers.methods import criteria, scores, training
from helpers.tools import run

TRAIN = """
import sys
from helpers.core import config, data, models
from helpers.methods import training
p = config.get_profile("smoke", epochs=3, synthetic_train_per_class=8)
d = data.load_data(p)
model = models.create_model(p)
training.fit(model, d, p, sys.argv[1], models.spec_for(p))
training.save_model(model, models.spec_for(p), sys.argv[2], p)
"""


def _train(state, out, env):
    return subprocess.Popen([sys.executable, "-c", TRAIN, str(state), str(out)], env=env)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    env = {**os.environ, config.ARTIFACTS_ENV: str(tmp_path / "art"), "OMP_NUM_THREADS": "1"}
    assert _train(tmp_path / "a.pt", tmp_path / "a_model.pt", env).wait() == 0
    proc = _train(tmp_path / "b.pt", tmp_path / "b_model.pt", env)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill once the first epoch is saved
        if (tmp_path / "b.pt").exists():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert not (tmp_path / "b_model.pt").exists(), "the run finished before it could be killed"
    assert len(checkpoint.load(tmp_path / "b.pt")["history"]) < 3
    assert _train(tmp_path / "b.pt", tmp_path / "b_model.pt", env).wait() == 0
    a, b = checkpoint.load(tmp_path / "a_model.pt"), checkpoint.load(tmp_path / "b_model.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_same_seed_same_result(tmp_path):
    p = config.get_profile("smoke", epochs=1, synthetic_train_per_class=8)
    d = data.load_data(p)
    outs = []
    for name in ("one", "two"):
        model = models.create_model(p)
        training.fit(model, d, p, tmp_path / f"{name}.pt", models.spec_for(p))
        ref = data.class_balanced_sample(d.train, 1, p.seed)
        outs.append((model.state_dict(), criteria.compute_scores(model, ref, "lrp")))
    assert all(torch.equal(outs[0][0][k], outs[1][0][k]) for k in outs[0][0])
    assert all(torch.equal(outs[0][1]["filter"][n], outs[1][1]["filter"][n]) for n in outs[0][1]["filter"])


def test_damaged_score_file_names_the_file(tmp_path):
    torch.manual_seed(0)
    model = models.build_model(models.vgg16_bn_spec(0.0625)).eval()
    ref = data.Split(torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), torch.arange(4))
    path = scores.save(criteria.compute_scores(model, ref, "weight"), model, tmp_path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(checkpoint.CheckpointError, match=f"{path} is truncated or corrupt"):
        scores.load(tmp_path, "weight", model)


def test_compressed_checkpoint_is_read_in_memory_and_damage_is_named(tmp_path):
    path = tmp_path / "x.pt"
    checkpoint.save({"kind": "k", "v": torch.arange(3)}, path)
    xz = tmp_path / "x.pt.xz"
    xz.write_bytes(lzma.compress(path.read_bytes()))
    assert torch.equal(checkpoint.load(xz, kind="k")["v"], torch.arange(3))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["x.pt", "x.pt.xz"]
    xz.write_bytes(xz.read_bytes()[:40])
    with pytest.raises(checkpoint.CheckpointError, match=f"{xz} is truncated or corrupt"):
        checkpoint.load(xz)


def test_scores_of_another_model_are_refused(tmp_path):
    torch.manual_seed(0)
    model = models.build_model(models.vgg16_bn_spec(0.0625)).eval()
    ref = data.Split(torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), torch.arange(4))
    scores.save(criteria.compute_scores(model, ref, "weight"), model, tmp_path)
    other = models.build_model(models.vgg16_bn_spec(0.0625)).eval()  # same shapes, other weights
    with pytest.raises(criteria.ScoreError, match="scores of another model.*run 02_relevance.ipynb"):
        scores.load(tmp_path, "weight", other)


def test_saved_score_sets_are_read_when_used_and_checked_like_load(tmp_path):
    torch.manual_seed(0)
    model = models.build_model(models.vgg16_bn_spec(0.0625)).eval()
    ref = data.Split(torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), torch.arange(4))
    for name in ("weight", "random"):
        scores.save(criteria.compute_scores(model, ref, name), model, tmp_path)
    saved = scores.Saved(tmp_path, ["weight", "random", "weight"], model)
    assert list(saved) == ["weight", "random"] and len(saved) == 2
    direct = scores.load(tmp_path, "random", model)
    assert all(torch.equal(saved["random"]["weight"][n], w) for n, w in direct["weight"].items())
    assert saved["weight"] is not saved["weight"]  # read afresh each time: nothing is kept
    assert list(saved.only(["random"])) == ["random"]
    with pytest.raises(KeyError, match="no score set taylor here"):
        saved.only(["taylor"])
    with pytest.raises(checkpoint.CheckpointError, match="taylor.pt does not exist: run 02_relevance.ipynb"):
        scores.Saved(tmp_path, ["weight", "taylor"], model)
    other = models.build_model(models.vgg16_bn_spec(0.0625)).eval()
    with pytest.raises(criteria.ScoreError, match="scores of another model"):
        scores.Saved(tmp_path, ["weight"], other)["weight"]


def _execute(nb, out, **params):
    import papermill as pm
    return pm.execute_notebook(str(config.NOTEBOOKS_DIR / nb), str(out / nb), parameters={"profile": "smoke", **params},
                               cwd=str(config.NOTEBOOKS_DIR), progress_bar=False, log_output=False,
                               kernel_manager_class=run.IPCKernelManager)


@pytest.mark.slow
def test_missing_upstream_artifact_names_the_notebook_to_run(tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match="run 01_baseline_training.ipynb first"):
        _execute("02_relevance.ipynb", tmp_path)


@pytest.mark.slow
def test_bad_notebook_parameters_are_named(tmp_path):
    """Run directly with papermill (not through the runner), the notebook's first cell checks too
    (one kernel, about 13 s: every rule itself, choices included, is tested in test_run.py
    without starting one)."""
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match="epochs must be int, got str 'ten'"):
        _execute("01_baseline_training.ipynb", tmp_path, epochs="ten")
