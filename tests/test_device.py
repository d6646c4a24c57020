"""The device policy: a setting with clear errors, and no helper moves a model it is given."""
import sys
import time

import pytest
import torch
from torch import nn

from helpers.core import config, data, measure, models
from helpers.methods import criteria, finetune, pruning, quantization, training
from helpers.studies import sweeps


def test_device_setting_and_its_errors(monkeypatch):
    monkeypatch.delenv(config.DEVICE_ENV, raising=False)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert config.device(config.get_profile("smoke")).type == auto
    assert config.device(config.get_profile("smoke", device="cpu")) == torch.device("cpu")
    monkeypatch.setenv(config.DEVICE_ENV, "cpu")
    assert config.device(config.get_profile("smoke")) == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'; valid: cpu, cuda, cuda:N"):
        config.get_profile("smoke", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available here: use device 'cpu'"):
            config.get_profile("smoke", device="cuda")


@pytest.fixture
def watched(monkeypatch):
    """Models in this set fail the test if anything calls .to(), .cuda() or .cpu() on them
    (``.to(memory_format=...)`` alone is a layout change on the same device, not a move)."""
    ids = set()
    for name in ("to", "cuda", "cpu"):
        original = getattr(nn.Module, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            layout_only = _name == "to" and not args and set(kwargs) == {"memory_format"}
            if id(self) in ids and not layout_only:
                raise AssertionError(f"a helper called .{_name}() on the model it was given")
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(nn.Module, name, spy)
    return ids


def _setup(smoke):
    p = config.get_profile("smoke", synthetic_train_per_class=6, epochs=1)
    d = data.load_data(p)
    model = models.build_model(models.vgg16_bn_spec(0.0625)).eval()
    ref = data.class_balanced_sample(d.train, 1, 0)
    return p, d, model, ref


def test_no_helper_moves_the_model_it_is_given(smoke, watched, tmp_path):
    p, d, model, ref = _setup(smoke)
    watched.add(id(model))
    x = data.normalize(d.test.x[:4])
    s = criteria.compute_scores(model, ref, "weight")
    for name in criteria.CRITERIA:
        criteria.compute_scores(model, ref, name)
    criteria.lrp_heatmaps(model, x, d.test.y[:4])
    training.evaluate(model, d.val)
    training.predict(model, x)
    counts = pruning.global_counts(model, s["filter"], 0.3)
    pruned = pruning.prune_filters(model, s["filter"], counts)
    pruning.unstructured_prune(model, s, 0.5)
    pruning.report_allocation(model, s, 0.5)
    pruning.sparse_state(model)
    sweeps.recalibrated(model, d, p)
    sweeps.structured_point(model, pruned, d, p)
    for fn in (measure.flops, measure.size_on_disk, measure.fold_batchnorm, models.cpu_copy):
        fn(model)
    measure.latency(model, 1, repeats=1, warmup=0)
    quantization.logits(model, d.test, p)
    quantization.quantize(model, [x], x[:2])
    watched.add(id(pruned))
    finetune.one_shot(pruned, d, p, tmp_path / "ft", 2, "vgg16_bn")  # began at chance: the guard lets it be
    training.fit(pruned, d, p, tmp_path / "fit.pt", models.spec_of(pruned, "vgg16_bn"), max_steps=1)
    assert models.device_of(model) == torch.device("cpu")


def test_loaded_and_created_models_land_on_the_asked_device(smoke, tmp_path):
    p = config.get_profile("smoke", device="cpu")
    model = models.create_model(p)
    assert models.device_of(model) == torch.device("cpu")
    training.save_model(model, models.spec_for(p), tmp_path / "m.pt", p)
    again, _ = training.load_model(tmp_path / "m.pt", device="cpu")
    assert models.device_of(again) == torch.device("cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_scores_prunes_and_trains_on_the_gpu(smoke, tmp_path):
    """Runs on a GPU machine only (make gpu-check): the same helpers with the model on CUDA."""
    p, d, model, ref = _setup(smoke)
    model = model.cuda()
    for name in criteria.CRITERIA:
        s = criteria.compute_scores(model, ref, name)
        assert all(v.device.type == "cpu" for v in s["filter"].values())
    pruned = pruning.prune_filters(model, s["filter"], pruning.global_counts(model, s["filter"], 0.3))
    assert models.device_of(pruned).type == "cuda"
    row = sweeps.structured_point(model, pruned, d, p, latency=True)
    assert row["latency_b1_ms"] > 0 and models.device_of(pruned).type == "cuda"
    training.fit(pruned, d, p, tmp_path / "fit.pt", models.spec_of(pruned, "vgg16_bn"), max_steps=2)
    assert models.device_of(pruned).type == "cuda"


def test_gpu_check_script_runs_its_measurements_on_cpu(tmp_path):
    """The GPU script's measuring code, on tiny sizes on the CPU (its full run needs CUDA)."""
    from helpers.tools import gpu_check
    out = gpu_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path / "g.json")])
    assert out["train_img_per_s_series_loop"] > 0 and out["train_img_per_s_model_step"] > 0
    assert out["lrp_seconds_200_images"] > 0 and (tmp_path / "g.json").exists()
    assert out["loop_over_model_step"] == out["train_img_per_s_series_loop"] / out["train_img_per_s_model_step"]
    assert gpu_check.cuda_test_files() == [str(config.REPO_ROOT / "tests" / "test_device.py")]


def test_gpu_check_records_a_time_out_and_goes_on():
    """A part past its limit is recorded as timed out (its process group stopped), not raised."""
    from helpers.tools import gpu_check
    start = time.perf_counter()
    status = gpu_check._run([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)
    assert status == "timed out after 1 s" and time.perf_counter() - start < 30
    assert gpu_check._run([sys.executable, "-c", "raise SystemExit(3)"]) == 3


def test_gpu_check_parts_are_checked(tmp_path, capsys):
    from helpers.tools import gpu_check
    assert gpu_check.parse_parts("tests, lrp") == ("tests", "lrp")
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--parts", "lrp,trainig", "--out", str(tmp_path / "g.json")])
    assert "unknown part 'trainig'" in capsys.readouterr().err
    out = gpu_check.main(["--device", "cpu", "--quick", "--parts", "lrp", "--out", str(tmp_path / "g.json")])
    assert set(out) == {"device", "lrp_seconds_200_images"}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_made_on_the_gpu_are_the_cpus():
    """The same generator state gives the same crops, flips and order on the GPU as on the CPU;
    normalisation and the 64x64 resize agree to float32 rounding."""
    x = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8)
    split = data.Split(x, torch.arange(300) % 100)
    for size in (32, 64):
        on_cpu = data.batches(split, 128, size, shuffle=True, generator=torch.Generator().manual_seed(5),
                              train_augment=True)
        on_gpu = data.batches(split.to("cuda"), 128, size, shuffle=True,
                              generator=torch.Generator().manual_seed(5), train_augment=True)
        for (xc, yc), (xg, yg) in zip(on_cpu, on_gpu, strict=True):
            assert xg.is_cuda and torch.equal(yc, yg.cpu())
            torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_diverged_epoch_on_the_gpu_still_raises(smoke):
    """On CUDA the loss check runs one step late; a NaN loss still stops the epoch."""
    p, d, model, _ = _setup(smoke)
    model = model.cuda()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    opt, sched = training.make_optimizer(model, p, 10)
    with pytest.raises(training.DivergenceError, match="became nan"):
        training.train_epoch(model, d.train, opt, sched, p, torch.Generator().manual_seed(0), max_steps=3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_training_on_the_gpu_trains_the_saved_module(smoke, tmp_path):
    """``compile_training`` trains through CUDA graphs; the module that is saved is the one trained."""
    p, d, model, _ = _setup(smoke)
    p = config.get_profile("smoke", synthetic_train_per_class=6, epochs=1, compile_training=True)
    model = model.cuda()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert training.compiled_for_training(model, p) is not model
    training.fit(model, d, p, tmp_path / "fit.pt", models.spec_of(model, "vgg16_bn"), max_steps=3)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert training.compiled_for_training(model.cpu(), p) is model.cpu()
