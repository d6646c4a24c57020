"""Post-training quantization on CPU through torchao's PT2E flow with the x86 Inductor quantizer.

PyTorch's recommended path today: ``torch.export`` the float model, ``prepare_pt2e`` with
``X86InductorQuantizer``, calibrate on training images, ``convert_pt2e``, and run it through
``torch.compile`` (Inductor lowers the quantize/dequantize patterns to int8 oneDNN kernels).
The legacy ``torch.ao.quantization`` FX flow is deprecated in torch 2.14 and not used.

* static int8: weights per-channel int8, activations per-tensor uint8 calibrated (conv + linear);
* dynamic int8: Linear layers only, activation ranges computed at run time;
* on an x86 CPU without VNNI the int8 kernels sum pairs of uint8 x int8 products into a
  saturating int16 (``vpmaddubsw``): with activations over the full 0-255 range they overflow,
  so the models whose kernels run there are quantized with 7-bit activations
  (``reduce_range``, torchao's advice for such CPUs; :func:`kernels_saturate`);
* bf16 / fp16 storage: weights stored at half width, upcast to float32 to run.
"""
from __future__ import annotations


import contextlib
import hashlib
import copy
import dataclasses
import itertools
import logging
import lzma
import math
import os
import warnings
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..core import checkpoint, measure
from . import pruning
from ..core.data import batches
from ..core.models import build_model, device_of

STORAGE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _silenced(loggers: tuple[str, ...], message: str):
    """Inside this block only: records below ERROR of ``loggers`` and the UserWarnings matching
    ``message`` are dropped (a logger filter and a warnings filter: cheap enough per call)."""
    logs = [logging.getLogger(name) for name in loggers]
    for log in logs:
        log.addFilter(_below_error)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
            yield
    finally:
        for log in logs:
            log.removeFilter(_below_error)


def _quiet():
    """While quantizing: torchao's import logs a one-off pytree notice and torch warns that
    quantized tensor types are deprecated (the PT2E flow is their replacement); neither concerns
    the user here."""
    return _silenced(("torch.utils._pytree",), ".*quantize_per_tensor.*deprecated")


def kernels_saturate() -> bool:
    """Whether this machine's int8 kernels overflow on full-range activations: an x86 CPU
    without VNNI (AVX-512 VNNI, AVX-VNNI) or AMX multiplies uint8 activations by int8 weights
    with ``vpmaddubsw``, which adds each pair of products into an int16 and saturates
    (255 x 127 x 2 > 32,767; with 7-bit activations 127 x 127 x 2 fits). Measured on this
    project's 2-core AVX2 VM, on the cpu baseline (3,000 test images): compiled int8 kernels
    agreed with the int8 reference graph on 83.9 % of the images at 8-bit activations (accuracy
    56.13 % against the graph's 59.10 %), on 99.5 % at 7-bit (58.90 % against 58.97 %)."""
    caps = torch.cpu.get_capabilities()
    if caps.get("architecture") not in ("x86_64", "x86"):
        return False
    return onednn_capped_below_vnni() or not any(caps.get(k) for k in ("avx512_vnni", "avx_vnni", "amx_int8"))


NO_VNNI_ISAS = ("SSE41", "AVX", "AVX2", "AVX512_CORE")
"""oneDNN's ISA caps without VNNI: under ``ONEDNN_MAX_CPU_ISA`` set to one of them (a CPU of another
kind emulated, docs/testing.md) a VNNI machine's int8 kernels saturate like an AVX2 machine's."""


def onednn_capped_below_vnni() -> bool:
    """Whether ``$ONEDNN_MAX_CPU_ISA`` (or its older name ``$DNNL_MAX_CPU_ISA``) keeps oneDNN off VNNI."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return cap.upper() in NO_VNNI_ISAS


def needs_reduced_range(p) -> bool:
    """7-bit activations for the models profile ``p`` runs through int8 kernels
    (``compile_quantized``) on a machine where :func:`kernels_saturate`; 8-bit otherwise (the
    reference graph then computes what is reported)."""
    return bool(p.compile_quantized) and kernels_saturate()


class KernelMismatchError(RuntimeError):
    """Compiled int8 kernels compute something else than the int8 graph they were lowered from."""


def weight_range(bits: int) -> tuple[int, int]:
    """The int8 weights' range on a ``bits``-bit grid: -128..127 at 8 bits (torchao's default),
    -32..31 at 6. A narrower grid stores in int8 and runs on the same kernels; its values take
    fewer distinct levels, which the LZMA-compressed sparse file codes in fewer bits."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 8:
        raise ValueError(f"weight_bits must be an integer from 2 to 8 (int8 storage), got {bits!r}")
    return -2 ** (bits - 1), 2 ** (bits - 1) - 1


def _quantizer(dynamic: bool, reduce_range: bool, weight_bits: int = 8):
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    q = xiq.X86InductorQuantizer()
    config = xiq.get_default_x86_inductor_quantization_config(is_dynamic=dynamic, reduce_range=reduce_range)
    if weight_bits != 8:
        low, high = weight_range(weight_bits)
        config = dataclasses.replace(config, weight=dataclasses.replace(config.weight, quant_min=low, quant_max=high))
    if dynamic:
        q.set_module_type_qconfig(nn.Linear, config)
    else:
        q.set_global(config)
    return q


def quantize(model: nn.Module, calibration, example: torch.Tensor, dynamic: bool = False,
             reduce_range: bool = False, weight_bits: int = 8) -> nn.Module:
    """An int8 copy of ``model`` (a ``torch.fx.GraphModule``), calibrated on the batches of
    ``calibration`` (iterable of input tensors). ``example`` fixes the traced batch size
    (the batch dimension is exported as dynamic). CPU-only by nature (x86 int8 kernels): it
    works on a CPU copy and never moves ``model``. ``reduce_range``: 7-bit activations (0-127),
    for int8 kernels that run on a CPU where :func:`kernels_saturate`; the default, 8-bit, is
    what the reference graph computes and what VNNI kernels match. ``weight_bits``: the per-channel
    int8 weights on a narrower grid (:func:`weight_range`; 8: the full int8 range)."""
    weight_range(weight_bits)
    with _quiet():
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        model = copy.deepcopy(model).eval().cpu()
        batch = torch.export.Dim("batch", min=1, max=4096)
        exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
        prepared = prepare_pt2e(exported, _quantizer(dynamic, reduce_range, weight_bits))
        with torch.no_grad():
            for x in calibration:
                prepared(x)
        # .eval() is a no-op for an exported graph; allow it so generic code can call it
        quantized = convert_pt2e(prepared)
        allow_exported_model_train_eval(quantized)
        return quantized


def int8_models(model: nn.Module, calibration, example: torch.Tensor, p) -> tuple[nn.Module, nn.Module]:
    """The static and the dynamic int8 copy of ``model`` (:func:`quantize`), with the activation
    range for where profile ``p`` runs them (:func:`needs_reduced_range`: 7-bit where its compiled
    kernels would overflow)."""
    return tuple(quantize(model, calibration, example, dynamic=dynamic, reduce_range=needs_reduced_range(p))
                 for dynamic in (False, True))


def used_state(qmodel: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """The tensors the quantized graph reads (int8 weights, scales, zero points, biases);
    the float originals that ``convert_pt2e`` leaves behind unused are dropped."""
    used = {n.target for n in qmodel.graph.nodes if n.op == "get_attr"}
    return {k: v for k, v in qmodel.state_dict().items() if k in used}


def _is_activation_qdq(node) -> bool:
    """A quantize/dequantize call whose scale and zero point are literals (static only;
    dynamic quantization computes them in the graph)."""
    return (node.op == "call_function" and "quantize_per_tensor" in str(node.target)
            and not any(isinstance(a, torch.fx.Node) for a in node.args[1:]))


def activation_bits(qmodel: torch.fx.GraphModule) -> int:
    """7 or 8: the width of the uint8 activations' range in the quantized graph (its
    quantize calls' ``quant_max``, 127 or 255; :func:`quantize`'s ``reduce_range``)."""
    tops = {n.args[-2] for n in qmodel.graph.nodes if n.op == "call_function"
            and "quantize_per_tensor" in str(n.target) and n.args[-1] == torch.uint8}
    if not tops:
        raise ValueError("no uint8 activation quantization in this graph: not a model made by quantize()")
    return max(tops).bit_length()


def graph_constants(qmodel: torch.fx.GraphModule) -> dict[str, list]:
    """Activation scales and zero points, which ``convert_pt2e`` writes into the graph as
    literal arguments of the quantize/dequantize calls rather than as tensors."""
    return {n.name: list(n.args[1:]) for n in qmodel.graph.nodes if _is_activation_qdq(n)}


def pack(state: dict[str, torch.Tensor]) -> dict:
    """The tensors of ``state`` concatenated into one flat buffer per storage dtype, plus an
    index (name, dtype, shape, offset). Integer tensors whose values fit in int8 (the int8
    weights, and the per-channel weight zero points that PT2E keeps as int64) go into the
    int8 buffer. One buffer per dtype instead of one archive record per tensor: a record
    costs about 400 bytes in ``torch.save``'s zip format, a lot next to a 100 kB model."""
    buffers, index = {}, []
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        store = t.dtype
        if not t.is_floating_point() and t.numel() and -128 <= int(t.min()) and int(t.max()) <= 127:
            store = torch.int8
        key = str(store).removeprefix("torch.")
        offset = sum(b.numel() for b in buffers.get(key, []))
        buffers.setdefault(key, []).append(t.flatten().to(store))
        index.append([name, str(t.dtype).removeprefix("torch."), list(t.shape), key, offset])
    return {"buffers": {k: torch.cat(v) for k, v in buffers.items()}, "index": index}


def unpack(packed: dict) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack`: the named tensors in their original dtypes and shapes."""
    state = {}
    for name, dtype, shape, key, offset in packed["index"]:
        n = math.prod(shape)
        flat = packed["buffers"][key][offset:offset + n]
        state[name] = flat.to(getattr(torch, dtype)).reshape(shape)
    return state


def save(qmodel: torch.fx.GraphModule, spec: dict, mode: str, path: Path, **info) -> Path:
    """Save the quantized model's tensors (packed) and activation constants with the float
    spec they came from (``weights_only`` loadable; :func:`load` rebuilds the graph)."""
    return checkpoint.save({"kind": "quantized", "spec": spec, "mode": mode,
                            "state": pack(used_state(qmodel)), "constants": graph_constants(qmodel),
                            "activation_bits": activation_bits(qmodel), **info}, path)


def load(path: Path, example: torch.Tensor) -> tuple[torch.fx.GraphModule, dict]:
    """Rebuild a model saved by :func:`save`: quantize a fresh float model of the same spec
    (any calibration; it only fixes the graph) and load the saved tensors into it."""
    obj = checkpoint.load(path, kind="quantized")
    try:
        state = unpack(obj["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise checkpoint.CheckpointError(f"{path}: damaged tensor index ({err})") from None
    return _rebuild(obj, state, example, path), obj


def _rebuild(obj: dict, state: dict, example: torch.Tensor, path: Path) -> torch.fx.GraphModule:
    """A fresh quantized graph of ``obj``'s spec (any calibration; it only fixes the graph)
    with the saved tensors and activation constants loaded into it (files saved before
    ``activation_bits`` was recorded hold 8-bit activations)."""
    qmodel = quantize(build_model(obj["spec"]), [example], example, dynamic=obj["mode"] == "dynamic",
                      reduce_range=obj.get("activation_bits", 8) == 7, weight_bits=obj.get("weight_bits", 8))
    missing = set(used_state(qmodel)) - set(state)
    if missing:
        raise checkpoint.CheckpointError(f"{path} does not fit its spec: missing {sorted(missing)[:3]}")
    qmodel.load_state_dict(state, strict=False)
    for node in qmodel.graph.nodes:
        if _is_activation_qdq(node):
            node.args = (node.args[0], *obj["constants"][node.name])
    qmodel.recompile()
    return qmodel


def save_sparse(qmodel: torch.fx.GraphModule, spec: dict, path: Path, weight_bits: int = 8) -> dict:
    """Save a static int8 model with its int8 weight tensors stored sparse (one bit per entry,
    packed, plus the nonzero int8 values: :func:`pruning.sparse_tensors`), packed like
    :func:`save`; and the same file compressed by the standard library's LZMA (``.xz`` beside
    it). Returns both file sizes in bytes. :func:`load_sparse` reads either file.
    ``weight_bits``: the grid ``qmodel``'s weights were quantized on (:func:`quantize`), recorded
    so that the rebuilt graph carries the same range."""
    state = used_state(qmodel)
    weights = [k for k, v in state.items() if v.dtype == torch.int8 and v.dim() > 1]
    checkpoint.save({"kind": "quantized_sparse", "spec": spec, "mode": "static",
                     "state": pack(pruning.sparse_tensors(state, weights)),
                     "constants": graph_constants(qmodel), "weight_bits": weight_bits}, path)
    xz = Path(path).with_name(Path(path).name + ".xz")
    data = lzma.compress(Path(path).read_bytes(), preset=9 | lzma.PRESET_EXTREME)
    checkpoint.atomic_write(xz, lambda tmp: tmp.write_bytes(data))
    return {"sparse_bytes": file_bytes(path), "xz_bytes": file_bytes(xz)}


def load_sparse(path: Path, example: torch.Tensor) -> tuple[torch.fx.GraphModule, dict]:
    """Rebuild a model saved by :func:`save_sparse` (its ``.pt`` or its ``.pt.xz``)."""
    obj = checkpoint.load(path, kind="quantized_sparse")
    dense = pruning.dense_state(unpack(obj["state"]))
    return _rebuild(obj, dense, example, path), obj


def file_bytes(path: Path) -> int:
    return os.path.getsize(path)


class Compiled(nn.Module):
    """``torch.compile(model)`` whose compilations run with Inductor's weight freezing (needed for
    the int8 kernels) and its C++ wrapper (the generated code calls the kernels from C++ rather
    than Python: at batch 1 on this small model the per-call overhead is most of the latency;
    measured 1.13 ms instead of 1.52 ms, int8). The settings are patched around the calls that
    may compile (the first call with an input shape, dtype and grad mode not seen before), so
    nothing changes for the rest of the process and the calls measured for latency carry no
    patching. ``torch.compile(options={"freezing": True})`` and a backend that patches only
    Inductor are not enough: Dynamo reads the setting while tracing, and without it the int8
    graph fails to lower (measured with torch 2.14: ``UnsupportedOperatorException:
    onednn.qconv_prepack``). While compiling, Inductor's oneDNN lowering warns about a tensor
    copy and the C++ build logs that no CUDA runtime is found; both are silenced there."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.compiled = torch.compile(model)
        self._seen: set = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype, torch.is_grad_enabled())
        if key in self._seen:
            return self.compiled(x)
        with torch._inductor.config.patch(freezing=True, cpp_wrapper=True), \
                _silenced(("torch.utils.cpp_extension",), "To copy construct from a tensor"):
            out = self.compiled(x)
        self._seen.add(key)
        return out


def compiled(model: nn.Module) -> nn.Module:
    """``model`` compiled for CPU inference (:class:`Compiled`); call it under ``torch.no_grad``
    (freezing applies to inference graphs only)."""
    return Compiled(model)


def half_storage_state(model: nn.Module, dtype: str = "bf16") -> dict:
    """The state dict with floating-point tensors stored as bf16 or fp16."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {list(STORAGE_DTYPES)}, got {dtype!r}")
    return {k: v.to(STORAGE_DTYPES[dtype]) if v.is_floating_point() else v
            for k, v in model.state_dict().items()}


def from_half_storage(model: nn.Module, state: dict) -> nn.Module:
    """A float32 copy of ``model`` with the (rounded) half-width weights loaded."""
    model = copy.deepcopy(model)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


@torch.no_grad()
def logits(model: nn.Module, split, p) -> torch.Tensor:
    """Logits (N, 100) on ``split``, in evaluation batches, on the model's device; returned on the CPU."""
    dev = device_of(model)
    return torch.cat([model(x.to(dev)).float().cpu() for x, _ in batches(split, p.eval_batch_size, p.input_size)])


def agreement(reference: torch.Tensor, other: torch.Tensor) -> dict:
    """Top-1 agreement (%) and mean cosine similarity of two logit matrices (N, C)."""
    return {"top1_agreement": 100.0 * (reference.argmax(1) == other.argmax(1)).float().mean().item(),
            "cosine": torch.nn.functional.cosine_similarity(reference, other, dim=1).mean().item()}


def measure_variant(name: str, model: nn.Module, split, p, reference: torch.Tensor, size_bytes: int,
                    out: torch.Tensor | None = None) -> dict:
    """Accuracy, loss, agreement with the float logits and file size of one variant (``out``: its
    logits on ``split`` when already computed)."""
    out = logits(model, split, p) if out is None else out
    loss = torch.nn.functional.cross_entropy(out, split.y).item()
    acc = 100.0 * (out.argmax(1) == split.y).float().mean().item()
    return {"variant": name, "test_acc": acc, "test_loss": loss, **agreement(reference, out),
            "size_MB": size_bytes / measure.MB}


def measure_variants(nets: dict[str, nn.Module], files: dict[str, int], split, p,
                     reference: torch.Tensor, kernels: pd.DataFrame | None = None) -> pd.DataFrame:
    """:func:`measure_variant` of every variant (``files``: its file size in bytes), with latencies
    measured side by side (:func:`helpers.core.measure.latency_pairs`): on a shared machine the
    speed-ups hold even when its speed drifts between one variant and the next. ``kernels``
    (:func:`check_kernels`) adds its columns to the int8 variants' rows, and the compiled logits it
    computed on the same split are reused rather than computed again."""
    same_split = kernels is not None and kernels.attrs.get("split") == split_digest(split)
    known = kernels.attrs.get("logits", {}) if same_split else {}
    rows = [measure_variant(n, m, split, p, reference, files[n], known.get(n)) for n, m in nets.items()]
    latency = measure.latency_pairs(nets, p.input_size, p.latency_budget_s)
    table = pd.DataFrame([{**row, **latency[row["variant"]]} for row in rows])
    return table if kernels is None else table.merge(kernels, on="variant", how="left")


def split_digest(split) -> str:
    """A digest of a split's images and labels: which split some logits were computed on (two
    splits of one size, validation and test, are told apart)."""
    h = hashlib.sha256(split.x.contiguous().numpy().tobytes())
    h.update(split.y.contiguous().numpy().tobytes())
    return h.hexdigest()


def check_kernels(pairs: dict[str, tuple[nn.Module, nn.Module]], split, p,
                  min_agreement: float = 95.0) -> pd.DataFrame:
    """For each int8 variant, its compiled model (``pairs[name] = (graph, compiled)``) against
    the int8 reference graph it was lowered from, on ``split``: the activation range, top-1
    agreement (%) and the largest logit difference. Raises :class:`KernelMismatchError` when
    the agreement is below ``min_agreement`` (saturating kernels measured 83.9 % on the cpu
    baseline, 7-bit activations 99.5 %): the int8 accuracy measured would then be the
    kernels' overflow rather than quantization's cost. The compiled logits ride along in the
    table's ``attrs["logits"]`` for :func:`measure_variants`."""
    rows, outs = [], {}
    for name, (graph, fast) in pairs.items():
        ref, out = logits(graph, split, p), logits(fast, split, p)
        outs[name] = out
        rows.append({"variant": name, "activation_bits": activation_bits(graph),
                     "kernel_agreement": agreement(ref, out)["top1_agreement"],
                     "max_logit_diff": (ref - out).abs().max().item()})
        if rows[-1]["kernel_agreement"] < min_agreement:
            raise KernelMismatchError(
                f"{name}: the compiled int8 kernels agree with the int8 reference graph on only "
                f"{rows[-1]['kernel_agreement']:.1f} % of {len(split)} images (largest logit difference "
                f"{rows[-1]['max_logit_diff']:.3g}; {rows[-1]['activation_bits']}-bit activations, "
                f"kernels_saturate() = {kernels_saturate()} here). On a CPU without VNNI 8-bit activations "
                "overflow: quantize with reduce_range=True (quantization.needs_reduced_range(p)); otherwise set the "
                "profile's compile_quantized to false to measure the reference graph")
    table = pd.DataFrame(rows)
    table.attrs.update(logits=outs, split=split_digest(split))
    return table


def calibration_batches(d, p, n: int) -> list[torch.Tensor]:
    """``n`` shuffled (seeded) training batches, images only, for activation ranges."""
    g = torch.Generator().manual_seed(p.seed)
    return [x for x, _ in itertools.islice(batches(d.train, p.batch_size, p.input_size, shuffle=True, generator=g), n)]


def variants(model: nn.Module, static: nn.Module, dynamic: nn.Module, half: dict, folder: Path,
             source: str, p) -> tuple[dict[str, nn.Module], dict[str, int]]:
    """Every variant to measure (compiled where the profile asks) and the size of its saved file."""
    run = compiled if p.compile_quantized else (lambda m: m)
    files = {"float32": measure.state_dict_bytes(model.state_dict()),
             "int8 static": file_bytes(folder / f"{source}_int8_static.pt"),
             "int8 dynamic (linear)": file_bytes(folder / f"{source}_int8_dynamic.pt")}
    nets = {"float32": model, "int8 static": run(static), "int8 dynamic (linear)": run(dynamic)}
    if p.compile_quantized:
        nets["float32 compiled"], files["float32 compiled"] = run(model), files["float32"]
    for dt, state in half.items():
        nets[f"{dt} storage"] = from_half_storage(model, state)
        files[f"{dt} storage"] = file_bytes(folder / f"{source}_{dt}.pt")
    return nets, files


def target_table(table: pd.DataFrame, variant: str = "int8 static") -> pd.DataFrame:
    """The quantized variant against float32 (and compiled float32, when measured)."""
    t = table.set_index("variant")
    rows = []
    for base in [b for b in ("float32", "float32 compiled") if b in t.index]:
        rows.append({"against": base, "accuracy_drop": t.loc[base, "test_acc"] - t.loc[variant, "test_acc"],
                     "size_ratio": t.loc["float32", "size_MB"] / t.loc[variant, "size_MB"],
                     "latency_b1_speedup": t.loc[base, "latency_b1_ms"] / t.loc[variant, "latency_b1_ms"],
                     "latency_b256_speedup": t.loc[base, "latency_b256_ms"] / t.loc[variant, "latency_b256_ms"]})
    out = pd.DataFrame(rows)
    out["meets_accuracy"] = out["accuracy_drop"] <= 0.5
    out["meets_size"] = out["size_ratio"] >= 3.5
    out["meets_latency"] = out["latency_b1_speedup"] >= 1.5
    return out
