import pytest
import torch

from helpers import checkpoint, config, data, measure, models, quantization, training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    p = config.get_profile("smoke", epochs=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(config.ARTIFACTS_ENV, str(tmp_path_factory.mktemp("art")))
        d = data.load_data(p)
    model = models.create_model(p)
    training.fit(model, d, p, tmp_path_factory.mktemp("fit") / "s.pt", models.spec_for(p))
    model.eval()
    calib = [x for x, _ in data.batches(d.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0))][:8]
    return p, d, model, calib


def test_static_int8_agrees_with_float(trained):
    p, d, model, calib = trained
    q = quantization.quantize(model, calib, calib[0][:2])
    ref, out = quantization.logits(model, d.test, p), quantization.logits(q, d.test, p)
    agree = quantization.agreement(ref, out)
    assert agree["top1_agreement"] >= 90.0 and agree["cosine"] >= 0.99, agree


def test_compiled_int8_lowers_to_int8_kernels_and_agrees(trained, recwarn, caplog):
    """The cpu profile's path (compile_quantized): Inductor with freezing must lower the int8
    graph (without freezing it fails with an unsupported oneDNN prepack op), quietly."""
    p, d, model, calib = trained
    q = quantization.quantize(model, calib, calib[0][:2])
    fast = quantization.compiled(q)
    agree = quantization.agreement(quantization.logits(q, d.test, p), quantization.logits(fast, d.test, p))
    assert agree["top1_agreement"] >= 97.0 and agree["cosine"] >= 0.999, agree
    assert not [w for w in recwarn if "copy construct" in str(w.message)]
    assert not [r for r in caplog.records if "CUDA" in r.getMessage()]
    assert not torch._inductor.config.freezing and not torch._inductor.config.cpp_wrapper  # scoped


def test_dynamic_int8_linear_agrees_with_float(trained):
    p, d, model, calib = trained
    q = quantization.quantize(model, calib, calib[0][:2], dynamic=True)
    agree = quantization.agreement(quantization.logits(model, d.test, p), quantization.logits(q, d.test, p))
    assert agree["top1_agreement"] >= 97.0 and agree["cosine"] >= 0.999, agree


def test_save_load_round_trip_gives_the_same_outputs(trained, tmp_path):
    p, d, model, calib = trained
    spec = models.spec_for(p)
    for mode in ("static", "dynamic"):
        q = quantization.quantize(model, calib, calib[0][:2], dynamic=mode == "dynamic")
        quantization.save(q, spec, mode, tmp_path / f"{mode}.pt")
        again, obj = quantization.load(tmp_path / f"{mode}.pt", calib[0][:2])
        x = data.normalize(d.test.x[:32])
        assert obj["mode"] == mode and torch.equal(again(x), q(x))
        torch.load(tmp_path / f"{mode}.pt", weights_only=True)


def test_quantized_layers_are_four_times_smaller(trained, tmp_path):
    p, d, model, calib = trained
    q = quantization.quantize(model, calib, calib[0][:2])
    state = quantization.used_state(q)
    int8 = sum(v.numel() for v in state.values() if v.dtype == torch.int8)
    float_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert int8 == float_weights  # every conv and linear weight is stored in int8: 4x fewer bytes
    quantization.save(q, models.spec_for(p), "static", tmp_path / "q.pt")
    assert measure.state_dict_bytes(model.state_dict()) / quantization.file_bytes(tmp_path / "q.pt") > 3.0


def test_half_storage(trained):
    p, d, model, calib = trained
    state = quantization.half_storage_state(model, "bf16")
    assert all(v.dtype == torch.bfloat16 for v in state.values() if v.is_floating_point())
    assert measure.state_dict_bytes(state) < 0.6 * measure.state_dict_bytes(model.state_dict())
    back = quantization.from_half_storage(model, state)
    agree = quantization.agreement(quantization.logits(model, d.test, p), quantization.logits(back, d.test, p))
    assert agree["cosine"] > 0.999
    with pytest.raises(ValueError, match="dtype must be one of"):
        quantization.half_storage_state(model, "int4")


def test_pack_round_trip_keeps_names_dtypes_shapes_and_values():
    g = torch.Generator().manual_seed(0)
    state = {"w": torch.randint(-128, 128, (4, 3, 3, 3), generator=g, dtype=torch.int8),
             "zp": torch.zeros(4, dtype=torch.int64),            # fits in int8: stored narrow
             "big": torch.tensor([0, 300, -5], dtype=torch.int64),  # does not: stays int64
             "scale": torch.rand(4, generator=g), "empty": torch.zeros(0, dtype=torch.int64)}
    packed = quantization.pack(state)
    assert set(packed["buffers"]) == {"int8", "int64", "float32"}
    assert packed["buffers"]["int8"].numel() == 4 * 27 + 4
    back = quantization.unpack(packed)
    assert list(back) == list(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and torch.equal(back[k], state[k]), k


def test_a_damaged_tensor_index_is_named(trained, tmp_path):
    p, d, model, calib = trained
    q = quantization.quantize(model, calib, calib[0][:2])
    quantization.save(q, models.spec_for(p), "static", tmp_path / "q.pt")
    obj = torch.load(tmp_path / "q.pt", weights_only=True)
    obj["state"]["index"][0][4] = 10 ** 9  # an offset past the end of its buffer
    checkpoint.save(obj, tmp_path / "bad.pt")
    with pytest.raises(checkpoint.CheckpointError, match="bad.pt: damaged tensor index"):
        quantization.load(tmp_path / "bad.pt", calib[0][:2])
