"""The shipped baseline: used when intact and matching, refused with a reason otherwise."""
import json

import pandas as pd
import pytest
import torch

from helpers.core import artifacts, checkpoint, config, data, models
from helpers.methods import shipped, training

from conftest import staged_cifar


@pytest.fixture
def smoke_ship(tmp_path, monkeypatch):
    """The smoke profile with its figures in a temporary folder and a saved (untrained) baseline."""
    monkeypatch.setattr(config, "FIGURES_ROOT", tmp_path / "figures")
    p = config.get_profile("smoke")
    model, spec = models.create_model(p), models.spec_for(p)
    history = pd.DataFrame({"epoch": [1], "val_acc": [3.0]})
    training.save_model(model, spec, artifacts.baseline(p).path, p, metrics={"test_acc": 1.0},
                        history=history.to_dict(orient="list"))
    return p, model, spec


def test_a_shipped_baseline_is_used_when_intact_and_matching(smoke_ship, capsys):
    p, model, spec = smoke_ship
    assert "no shipped baseline for the smoke profile" in shipped.problem(p, spec)
    target = shipped.ship(p)
    manifest = json.loads((p.figures / shipped.MANIFEST).read_text())
    assert manifest["sha256"] == shipped.sha256(target) and shipped.problem(p, spec) == ""
    fresh = models.create_model(config.get_profile("smoke", seed=1))
    history = shipped.train_or_load(fresh, None, p, p.artifacts / "unused.pt", spec)  # no data: no training
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert history["val_acc"].tolist() == [3.0] and "using the shipped baseline" in capsys.readouterr().out


def test_a_damaged_or_mismatching_shipped_baseline_is_refused_with_its_reason(smoke_ship, capsys):
    p, model, spec = smoke_ship
    target = shipped.ship(p)
    assert "another network" in shipped.problem(p, {**spec, "width": 0.5})
    assert "other settings (epochs, lr)" in shipped.problem(config.get_profile("smoke", epochs=9, lr=0.5), spec)
    target.write_bytes(target.read_bytes()[:-10] + b"0123456789")
    assert "does not match the sha256" in shipped.problem(p, spec)
    d = data.load_data(config.get_profile("smoke", synthetic_train_per_class=6))
    history = shipped.train_or_load(models.create_model(p), d, p, p.artifacts / "state.pt", spec)
    assert len(history) == p.epochs and "training the baseline: " in capsys.readouterr().out


def test_a_file_older_than_a_profile_field_is_read_with_the_fields_default(smoke_ship):
    p, _, spec = smoke_ship
    path = artifacts.baseline(p).path
    obj = checkpoint.load(path, kind="model")
    del obj["profile"]["subset_per_class"]  # saved before the field existed
    checkpoint.save(obj, path)
    shipped.ship(p)
    assert shipped.problem(p, spec) == ""
    assert "no shipped baseline" in shipped.problem(config.get_profile("smoke", subset_per_class=5), spec)  # apart


def test_the_explorer_loads_01s_baseline_else_the_shipped_one(smoke_ship):
    p, _, _ = smoke_ship
    ran = artifacts.baseline(p).path
    target = shipped.ship(p)
    assert shipped.baseline(p).path == ran  # 01 ran: its own file
    ran.unlink()
    assert shipped.baseline(p).path == target  # a fresh clone: the shipped file, no training
    target.write_bytes(target.read_bytes()[:-1])
    assert shipped.baseline(p).path == ran  # damaged: the missing file, whose error says to run 01
    with pytest.raises(checkpoint.CheckpointError, match="run 01_baseline_training.ipynb first"):
        training.load_artifact(shipped.baseline(p))


def test_shipping_refuses_a_file_above_four_megabytes(smoke_ship, monkeypatch):
    p, _, _ = smoke_ship
    monkeypatch.setattr(shipped, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="a shipped baseline may have 1,000"):
        shipped.ship(p)


CPU = config.get_profile("cpu")


@pytest.mark.skipif(not (CPU.figures / shipped.MODEL).exists(), reason="the cpu profile ships no baseline yet")
def test_the_shipped_cpu_baseline_is_the_one_its_manifest_describes():
    """Its metrics against the manifest; its network and recipe against the committed
    ``baseline_metrics`` (the committed figures' baseline may be an earlier training run of the
    same recipe: docs/measurements.md says which); on the real data, its test accuracy exactly."""
    p = CPU
    assert (p.figures / shipped.MODEL).stat().st_size <= shipped.MAX_BYTES
    assert shipped.problem(p, models.spec_for(p)) == ""
    obj = checkpoint.load(p.figures / shipped.MODEL, kind="model")  # weights_only=True
    manifest = checkpoint.load_json(p.figures / shipped.MANIFEST)
    assert obj["metrics"]["test_acc"] == manifest["metrics"]["test_acc"]
    committed = pd.read_csv(p.figures / "baseline_metrics.csv").iloc[0]
    assert (obj["metrics"]["parameters"], obj["metrics"]["epochs"]) == (committed["parameters"], committed["epochs"])
    if staged_cifar() is not None:  # on the real data: the shipped test accuracy, exactly
        model, _ = training.load_model(p.figures / shipped.MODEL)
        test = training.evaluate(model, data.load_data(p).test, p.eval_batch_size, p.input_size)
        assert round(test["acc"], 2) == round(manifest["metrics"]["test_acc"], 2)
