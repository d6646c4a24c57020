import pytest
import torch

from helpers import checkpoint, config, data, models, training


@pytest.fixture
def quick(smoke):
    return config.get_profile("smoke", epochs=2, synthetic_train_per_class=6)


def _setup(p):
    d = data.load_data(p)
    model = models.create_model(p)
    return d, model, models.spec_for(p)


def test_training_step_lowers_loss_on_a_fixed_batch(smoke):
    torch.manual_seed(0)
    model = models.build_model(models.vgg16_bn_spec(0.125))
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16)
    opt, _ = training.make_optimizer(model, smoke, steps=100)
    for group in opt.param_groups:
        group["lr"] = 0.05
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_interrupted_run_resumes_to_the_same_weights(quick, tmp_path):
    d, straight, spec = _setup(quick)
    h1 = training.fit(straight, d, quick, tmp_path / "a.pt", spec)
    _, resumed, _ = _setup(quick)
    training.fit(resumed, d, quick, tmp_path / "b.pt", spec, stop_after=1)
    assert len(checkpoint.load(tmp_path / "b.pt")["history"]) == 1
    _, resumed, _ = _setup(quick)  # a new process: fresh model, state from disk
    h2 = training.fit(resumed, d, quick, tmp_path / "b.pt", spec)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert h1[["train_loss", "val_acc"]].equals(h2[["train_loss", "val_acc"]])


def test_finished_run_reloads_instead_of_training(quick, tmp_path, monkeypatch):
    d, model, spec = _setup(quick)
    training.fit(model, d, quick, tmp_path / "s.pt", spec)
    monkeypatch.setattr(training, "train_epoch", lambda *a, **k: pytest.fail("trained again"))
    _, again, _ = _setup(quick)
    training.fit(again, d, quick, tmp_path / "s.pt", spec)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_changed_settings_refuse_to_resume(quick, tmp_path):
    d, model, spec = _setup(quick)
    training.fit(model, d, quick, tmp_path / "s.pt", spec, stop_after=1)
    other = config.get_profile("smoke", epochs=2, synthetic_train_per_class=6, lr=0.01)
    with pytest.raises(checkpoint.CheckpointError, match=r"different settings \(lr\)"):
        training.fit(model, d, other, tmp_path / "s.pt", spec)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    checkpoint.save({"kind": "x", "value": torch.ones(3)}, path)

    def dies_half_way(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"kind": "x", "value": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)["value"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary left behind


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "model.pt"
    checkpoint.save({"kind": "model", "w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(checkpoint.CheckpointError, match=f"{path} is truncated or corrupt"):
        checkpoint.load(path)
    with pytest.raises(checkpoint.CheckpointError, match="run 01 first"):
        checkpoint.load(tmp_path / "missing.pt", hint="run 01 first")


def test_model_file_describes_itself(quick, tmp_path):
    d, model, spec = _setup(quick)
    training.save_model(model, spec, tmp_path / "m.pt", quick, metrics={"test_acc": 1.0})
    again, obj = training.load_model(tmp_path / "m.pt")
    assert obj["spec"] == spec and obj["profile"]["name"] == "smoke" and obj["metrics"]["test_acc"] == 1.0
    x = data.normalize(d.test.x[:4])
    assert torch.equal(model.eval()(x), again.eval()(x))


def test_checkpoint_of_other_architecture_is_a_clear_error(quick, tmp_path):
    d, model, spec = _setup(quick)
    obj = {"kind": "model", "spec": models.vgg16_bn_spec(0.25), "model": model.state_dict()}
    checkpoint.save(obj, tmp_path / "m.pt")
    with pytest.raises(checkpoint.CheckpointError, match="m.pt: the weights do not match"):
        training.load_model(tmp_path / "m.pt")


def test_evaluate_returns_accuracy_and_loss(quick):
    d, model, _ = _setup(quick)
    out = training.evaluate(model, d.test, 100)
    assert set(out) == {"acc", "loss"} and 0 <= out["acc"] <= 100 and out["loss"] > 0


def test_resumed_run_reports_the_time_of_every_segment(quick, tmp_path):
    """Training time and throughput cover all segments of a resumed run, not the last one."""
    from helpers import report
    d, model, spec = _setup(quick)
    first = training.fit(model, d, quick, tmp_path / "s.pt", spec, stop_after=1)
    _, model, _ = _setup(quick)
    whole = training.fit(model, d, quick, tmp_path / "s.pt", spec)
    assert len(first) == 1 and len(whole) == quick.epochs > 1
    assert whole["epoch_s"].iloc[0] == first["epoch_s"].iloc[0]
    second = whole.iloc[1:]
    metrics = report.training_metrics(whole)
    assert metrics["train_minutes"] == round((first["epoch_s"].sum() + second["epoch_s"].sum()) / 60, 2)
    images = (first["img_per_s"] * first["epoch_s"]).sum() + (second["img_per_s"] * second["epoch_s"]).sum()
    assert metrics["train_img_per_s"] == round(images / whole["epoch_s"].sum(), 1)


def test_written_files_follow_the_umask(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        path = checkpoint.save_json({"a": 1}, tmp_path / "shared.json")
        assert (path.stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        assert (checkpoint.save_text("x", tmp_path / "private.txt").stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)
