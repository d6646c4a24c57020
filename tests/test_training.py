import dataclasses

import pytest
import torch

from helpers.core import checkpoint, config, data, models
from helpers.methods import training


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
    losses = [training.train_step(model, opt, x, y, smoke)[1].item() for _ in range(10)]
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


@pytest.mark.parametrize("dies_in", ["writing", "renaming"])
def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, dies_in):
    path = tmp_path / "ckpt.pt"
    checkpoint.save({"kind": "x", "value": torch.ones(3)}, path)

    def half_a_file(f):
        f.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    if dies_in == "writing":  # torch.save(obj, f) into the temporary file
        monkeypatch.setattr(torch, "save", lambda obj, f: half_a_file(f))
    else:  # the whole temporary file written, the process killed before it replaces the old one
        monkeypatch.setattr(checkpoint.os, "replace", lambda a, b: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"kind": "x", "value": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)["value"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary left behind


def test_the_same_checkpoint_gives_the_same_bytes_wherever_it_is_written(tmp_path):
    """Streamed to its temporary file, a checkpoint has the bytes ``torch.save`` gives in
    memory, whatever the file's name (the shipped baseline's sha256 depends on it)."""
    import io
    obj = {"kind": "x", "value": torch.arange(1000.0), "nested": {"n": 3}}
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    a, b = checkpoint.save(obj, tmp_path / "a.pt"), checkpoint.save(obj, tmp_path / "sub" / "b.pt")
    assert a.read_bytes() == b.read_bytes() == buffer.getvalue()


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
    from helpers.reporting import report
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


def test_distillation_only_when_asked(quick, tmp_path):
    d, model, spec = _setup(quick)
    teacher = models.create_model(quick)
    plain = training.fit(model, d, quick, tmp_path / "a.pt", spec, epochs=1, teacher=teacher)
    d2, model2, _ = _setup(quick)
    kd = training.fit(model2, d2, config.get_profile("smoke", epochs=2, synthetic_train_per_class=6, kd_alpha=0.5),
                      tmp_path / "b.pt", spec, epochs=1, teacher=teacher)
    assert plain["train_loss"].iloc[0] != kd["train_loss"].iloc[0]  # kd_alpha 0: labels only
    assert "distillation" in checkpoint.load(tmp_path / "b.pt")["run"]


def test_divergence_guard_fires_on_a_planted_nan(quick, tmp_path):
    d, model, spec = _setup(quick)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(training.DivergenceError, match="became nan"):
        training.fit(model, d, quick, tmp_path / "s.pt", spec, epochs=1, guard="lrp one-shot")
    assert not (tmp_path / "s.pt").exists()  # nothing saved from a diverged run


def test_divergence_guard_fires_on_a_learning_rate_of_ten(trained_smoke, tmp_path):
    """A trained network (far above chance) fine-tuned at a learning rate of ten collapses."""
    p, d, model = trained_smoke
    wild = dataclasses.replace(p, lr=10.0)
    with pytest.raises(training.DivergenceError, match="lrp one-shot.*it began at"):
        training.fit(model, d, wild, tmp_path / "s.pt", models.spec_for(p), epochs=1, guard="lrp one-shot")


def test_divergence_guard_names_the_run_and_spares_healthy_runs():
    training.check_diverged("x", 1, 2.3, val_acc=40.0)  # fine
    training.check_diverged("x", 2, 2.3, val_acc=1.0)   # only the first epoch is judged
    with pytest.raises(training.DivergenceError, match="weight at 30 %: validation accuracy 1.50 %"):
        training.check_diverged("weight at 30 %", 1, 2.3, val_acc=1.5)


def test_a_network_that_began_at_chance_did_not_collapse():
    """The collapse check judges a fall into the chance band (2x chance), not a stay in it."""
    training.check_diverged("x", 1, 4.6, val_acc=1.5, start_acc=1.0)   # began at chance: a result
    training.check_diverged("x", 1, 4.6, val_acc=2.0, start_acc=2.0)   # the band's edge is in it
    with pytest.raises(training.DivergenceError, match=r"1.50 % .* \(it began at 2.01 %\); the run collapsed"):
        training.check_diverged("x", 1, 4.6, val_acc=1.5, start_acc=2.01)
    with pytest.raises(training.DivergenceError, match="became nan"):  # a NaN loss diverged wherever it began
        training.check_diverged("x", 1, float("nan"), val_acc=1.0, start_acc=1.0)


@pytest.mark.collapse_guard
def test_fit_measures_where_a_guarded_run_began(quick, tmp_path, monkeypatch):
    """The start accuracy comes from the validation split before the first epoch, and only
    when a guard is asked for (the baseline's own training is not judged)."""
    d, model, spec = _setup(quick)
    seen = []
    original = training.check_diverged
    monkeypatch.setattr(training, "check_diverged",
                        lambda *a, **k: seen.append(k.get("start_acc")) or original(*a, **k))
    expected = training.evaluate(model, d.val, quick.eval_batch_size, quick.input_size)["acc"]
    training.fit(model, d, quick, tmp_path / "s.pt", spec, epochs=1, guard="lrp one-shot")
    assert seen == [expected]
    training.fit(model, d, quick, tmp_path / "t.pt", spec, epochs=1)
    assert seen == [expected]


def test_cosine_schedule_warms_up_linearly_then_decays():
    p = config.get_profile("smoke", schedule="cosine", lr=0.1, warmup=0.2)
    opt, sched = training.make_optimizer(torch.nn.Linear(2, 2), p, 10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[2] == pytest.approx(0.1)  # a tenth of the peak, then the peak
    assert lrs[1] < lrs[2] and all(a > b for a, b in zip(lrs[2:], lrs[3:]))  # then cosine down
    none = config.get_profile("smoke", schedule="cosine", lr=0.1, warmup=0.0)
    opt, _ = training.make_optimizer(torch.nn.Linear(2, 2), none, 10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


def _layout(model):
    return [w.is_contiguous() for w in model.parameters() if w.dim() == 4]


def test_channels_last_changes_the_layout_not_the_values_and_nests():
    torch.manual_seed(0)
    model = models.build_model(models.vgg16_bn_spec(0.125)).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    with models.channels_last(model, None):
        assert not any(_layout(model))  # every conv weight NHWC
        with models.channels_last(model):  # nested: already channels-last, left alone on exit
            pass
        assert not any(_layout(model))
        with torch.no_grad():
            torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-5)  # float32 rounding only
    assert all(_layout(model))


def test_fit_and_evaluate_leave_the_model_contiguous(quick, tmp_path, monkeypatch):
    d, model, spec = _setup(quick)
    seen, real = [], training.train_epoch
    monkeypatch.setattr(training, "train_epoch", lambda m, *a, **k: seen.append(_layout(m)) or real(m, *a, **k))
    training.fit(model, d, quick, tmp_path / "s.pt", spec)
    assert seen and not any(any(s) for s in seen)  # trained channels-last ...
    training.evaluate(model, d.val)
    assert all(_layout(model))  # ... and handed back contiguous, as saved
