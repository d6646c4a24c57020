import pytest
import torch

from helpers.core import checkpoint, config, data, measure, models
from helpers.methods import quantization


@pytest.fixture(scope="module")
def trained(trained_smoke):
    p, d, model = trained_smoke
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


def _saturating_conv():
    """One convolution whose int8 products are all large and positive: on an x86 CPU without
    VNNI, pairs of uint8 x int8 products at full range overflow the kernels' int16 sums."""
    m = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU()).eval()
    with torch.no_grad():
        m[0].weight.fill_(0.5)
        m[0].bias.zero_()
    x = torch.rand(8, 16, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.8
    return m, x


@torch.no_grad()
def test_compiled_kernels_compute_the_int8_graph_with_the_machines_activation_range():
    """The independent reference is the int8 graph itself (quantize/dequantize in float32)."""
    m, x = _saturating_conv()

    def kernel_error(reduce_range):
        q = quantization.quantize(m, [x], x[:2], reduce_range=reduce_range)
        ref = q(x)
        return ((quantization.compiled(q)(x) - ref).abs().max() / ref.abs().max()).item()

    assert kernel_error(quantization.kernels_saturate()) < 1e-3
    if quantization.kernels_saturate():  # this machine: why 7 bits are needed
        assert kernel_error(False) > 0.1


def test_kernels_saturate_on_x86_without_vnni_only(monkeypatch):
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    x86 = {"architecture": "x86_64", "avx2": True, "avx512_vnni": False, "avx_vnni": False, "amx_int8": False}
    for caps, expected in ((x86, True), ({**x86, "avx512_vnni": True}, False), ({**x86, "avx_vnni": True}, False),
                           ({**x86, "amx_int8": True}, False), ({"architecture": "aarch64"}, False)):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda caps=caps: caps)
        assert quantization.kernels_saturate() is expected, caps
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {**x86, "avx512_vnni": True})
    for cap, expected in (("AVX2", True), ("avx512_core", True), ("AVX512_CORE_VNNI", False), ("AVX2_VNNI", False)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)  # a VNNI machine with oneDNN held below or at VNNI
        assert quantization.kernels_saturate() is expected, cap


def test_reduced_range_only_where_the_profile_runs_the_kernels(monkeypatch):
    monkeypatch.setattr(quantization, "kernels_saturate", lambda: True)
    assert quantization.needs_reduced_range(config.get_profile("cpu")) is True
    assert quantization.needs_reduced_range(config.get_profile("smoke")) is False  # not compiled: the graph runs
    monkeypatch.setattr(quantization, "kernels_saturate", lambda: False)
    assert quantization.needs_reduced_range(config.get_profile("cpu")) is False


def test_activation_range_survives_save_and_load(trained, tmp_path):
    p, d, model, calib = trained
    spec, x = models.spec_for(p), data.normalize(d.test.x[:32])
    assert quantization.activation_bits(quantization.quantize(model, calib[:1], calib[0][:2])) == 8
    static, dynamic = quantization.int8_models(model, calib[:1], calib[0][:2], p)  # smoke: not compiled
    assert quantization.activation_bits(static) == quantization.activation_bits(dynamic) == 8
    assert any("choose_qparams" in str(n.target) for n in dynamic.graph.nodes)  # the dynamic one
    for mode in ("static", "dynamic"):
        q = quantization.quantize(model, calib, calib[0][:2], dynamic=mode == "dynamic", reduce_range=True)
        assert quantization.activation_bits(q) == 7
        quantization.save(q, spec, mode, tmp_path / f"{mode}.pt")
        again, obj = quantization.load(tmp_path / f"{mode}.pt", calib[0][:2])
        assert obj["activation_bits"] == quantization.activation_bits(again) == 7
        assert torch.equal(again(x), q(x))
    with pytest.raises(ValueError, match="not a model made by quantize"):
        quantization.activation_bits(torch.fx.symbolic_trace(model))


def test_check_kernels_reports_agreement_and_refuses_a_mismatch(trained):
    p, d, model, calib = trained
    q = quantization.quantize(model, calib, calib[0][:2])
    table = quantization.check_kernels({"int8 static": (q, q)}, d.test, p)
    assert table.loc[0, "kernel_agreement"] == 100.0 and table.loc[0, "max_logit_diff"] == 0.0
    assert table.loc[0, "activation_bits"] == 8

    class Shuffled(torch.nn.Module):  # stands in for kernels that compute something else
        def forward(self, x):
            return q(x).roll(1, dims=1)

    with pytest.raises(quantization.KernelMismatchError, match=r"int8 static.*reduce_range=True"):
        quantization.check_kernels({"int8 static": (q, Shuffled())}, d.test, p)


def test_measure_variants_reuses_the_kernel_checks_logits_on_the_same_split(trained, monkeypatch):
    p, d, model, calib = trained
    q = quantization.quantize(model, calib, calib[0][:2])
    kernels = quantization.check_kernels({"int8 static": (q, q)}, d.test, p)

    class Unrun(torch.nn.Module):  # the compiled model must not be evaluated again
        def forward(self, x):
            raise AssertionError("evaluated twice")

    monkeypatch.setattr(measure, "latency_pairs",
                        lambda nets, size, budget_s: {n: {"latency_b1_ms": 1.0} for n in nets})
    reference = quantization.logits(model, d.test, p)
    table = quantization.measure_variants({"int8 static": Unrun()}, {"int8 static": 1000}, d.test, p, reference,
                                          kernels)
    want = quantization.measure_variant("int8 static", q, d.test, p, reference, 1000)
    assert table.loc[0, "test_acc"] == want["test_acc"] and table.loc[0, "kernel_agreement"] == 100.0
    with pytest.raises(AssertionError, match="evaluated twice"):  # another split: computed afresh
        quantization.measure_variants({"int8 static": Unrun()}, {"int8 static": 1000}, d.val, p, reference, kernels)


def test_findings_name_the_kernels_activation_range_only_when_measured():
    import pandas as pd
    from helpers.reporting import findings
    targets = pd.DataFrame([{"against": "float32", "accuracy_drop": 0.25, "size_ratio": 3.8, "latency_b1_speedup": 1.1,
                             "latency_b256_speedup": 2.5, "meets_accuracy": True, "meets_size": True,
                             "meets_latency": False}])
    results = pd.DataFrame([{"variant": "float32", "kernel_agreement": float("nan"), "activation_bits": float("nan")},
                            {"variant": "int8 static", "kernel_agreement": 99.53, "activation_bits": 7.0}])
    lines = findings.quantization(targets, results)
    assert lines[0].startswith("int8 static against float32: test accuracy -0.25 points")
    assert "int8 static 99.53 % (7-bit activations)" in lines[1] and "float32 " not in lines[1]
    assert findings.quantization(targets, results.drop(columns=["kernel_agreement"])) == lines[:1]
    assert findings.quantization(targets) == lines[:1]
