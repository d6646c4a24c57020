"""``make gpu-check``: everything that needs a GPU, as one script for a GPU machine.

Its parts (``--parts``, all by default):

1. ``tests``: the unit tests marked ``cuda`` (skipped on machines without CUDA);
2. ``series``: the smoke series on CUDA, through the batch runner, into a temporary artifacts
   folder (about 7 min; its report notebooks run on the CPU);
3. ``training``: throughput of ``paper_scratch`` training (full-width VGG-16-BN, bf16 autocast) —
   through the series' own epoch loop as ``training.fit`` runs it, and the model step alone on a
   batch already on the GPU, its ceiling, in both memory layouts and with CUDA graphs;
4. ``lrp``: LRP scoring of 5,000 images (the paper_scratch network, ``epsilon_plus_flat``).

A part that runs a command (1, 2) records its exit status, or ``"timed out after N s"`` when it
ran past its limit (``--series-timeout`` for 2), and the script goes on to the next part. Where
one call may run only a few minutes, run ``--parts series`` and ``--parts tests,training,lrp``
as two calls. Prints one table and writes it as JSON (``--out``). ``--device cpu --quick`` runs
parts 3 and 4 on tiny sizes, so the script itself is tested where there is no GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core import config, data, models
from ..methods import criteria, training
from ..core.vocabulary import LRP


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _fake_split(n: int, seed: int = 0) -> data.Split:
    g = torch.Generator().manual_seed(seed)
    return data.Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                      torch.arange(n) % data.NUM_CLASSES)


def training_throughput(dev: torch.device, width: float = 1.0, batch: int = 128, steps: int = 60,
                        compile_step: bool = True) -> dict:
    """Images/s of training ``paper_scratch``'s full-width VGG-16-BN (bf16 autocast on CUDA).

    In both memory layouts (channels-last, and contiguous): the series' epoch loop
    (``training.train_epoch``: uint8 data on the device, batches cut and augmented there) and the
    bare model step on one batch kept on the device, its ceiling. Then, in the layout
    ``training.fit`` uses on ``dev``: the loop as ``fit`` runs it (through
    ``training.compiled_for_training``: CUDA graphs where the profile's ``compile_training``
    says so) and the bare step under ``torch.compile(mode="reduce-overhead")``.
    """
    p = config.get_profile("paper_scratch", width=width, batch_size=batch, device=dev.type)
    model = models.create_model(p)
    opt, sched = training.make_optimizer(model, p, 100 * steps)
    split = _fake_split(batch * steps)
    g = torch.Generator().manual_seed(0)
    out = {}
    for layout in ("contiguous", "channels_last"):
        with _layout(model, layout):
            out[f"loop_{layout}"] = _loop(model, split, opt, sched, p, g, dev)
            out[f"step_{layout}"] = _bare_steps(model, opt, dev, batch, steps, p.input_size)
    chosen = "channels_last" if models.fit_layout_is_channels_last(dev) else "contiguous"
    with _layout(model, chosen):
        out["train_img_per_s_model_step"] = out[f"step_{chosen}"]
        stepper = training.compiled_for_training(model, p) if compile_step else model
        out["train_img_per_s_series_loop"] = _compiled(lambda: _loop(stepper, split, opt, sched, p, g, dev))
        if compile_step and dev.type == "cuda":
            out["train_img_per_s_model_step_cuda_graphs"] = _compiled(lambda: _bare_steps(
                model, opt, dev, batch, steps, p.input_size, torch.compile(_step, mode="reduce-overhead")))
    if isinstance(out["train_img_per_s_series_loop"], float):
        out["loop_over_model_step"] = out["train_img_per_s_series_loop"] / out["train_img_per_s_model_step"]
        out["paper_scratch_200_epochs_min_series_loop"] = 200 * 45_000 / out["train_img_per_s_series_loop"] / 60
    return out


@contextlib.contextmanager
def _layout(model, layout: str):
    """``model`` stored in ``layout`` while the block runs, whatever :func:`models.channels_last`
    would choose on its device."""
    model.to(memory_format=getattr(torch, layout if layout == "channels_last" else "contiguous_format"))
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def _loop(model, split, opt, sched, p, g, dev) -> float:
    training.train_epoch(model, split, opt, sched, p, g, max_steps=3)  # warm-up (compiles, if compiled)
    _sync(dev)
    return training.train_epoch(model, split, opt, sched, p, g)["img_per_s"]


def _compiled(measure) -> float | str:
    """``measure()`` (which compiles), or why compiling failed."""
    try:
        return measure()
    except Exception as err:  # no compiler or Triton on this machine: recorded, not fatal
        return f"failed: {type(err).__name__}: {str(err)[:200]}"


def _step(model, opt, x, y):
    with models.autocast(x.device):  # the series' own: bf16 on CUDA
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _bare_steps(model, opt, dev, batch, steps, size, step=_step) -> float:
    layout = torch.channels_last if models.is_channels_last(model) else torch.contiguous_format
    x = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=layout)
    step(model, opt, x, torch.zeros(batch, dtype=torch.long, device=dev))  # warm-up (compiles, if compiled)
    y = torch.randint(0, 100, (batch,), device=dev)
    _sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step(model, opt, x, y)
    _sync(dev)
    return batch * steps / (time.perf_counter() - start)


def lrp_seconds(dev: torch.device, width: float = 1.0, n: int = 5000) -> dict:
    """Seconds to score every filter and weight by LRP on ``n`` images (100 per batch)."""
    torch.manual_seed(0)
    model = models.build_model(models.vgg16_bn_spec(width)).to(dev).eval()
    ref = _fake_split(n)
    criteria.compute_scores(model, _fake_split(100), LRP)  # warm-up
    _sync(dev)
    start = time.perf_counter()
    criteria.compute_scores(model, ref, LRP)
    return {f"lrp_seconds_{n}_images": time.perf_counter() - start}


def cuda_test_files(tests: Path = config.REPO_ROOT / "tests") -> list[str]:
    """The test files that hold ``cuda``-marked tests: collecting only them spares a GPU machine
    the Jupyter stack that the notebook tests import."""
    return sorted(str(f) for f in tests.glob("test_*.py") if "pytest.mark.cuda" in f.read_text())


PARTS = ("tests", "series", "training", "lrp")


def _run(cmd: list[str], env: dict | None = None, timeout: float = 300) -> int | str:
    """Run ``cmd`` in its own process group; its exit status, or ``"timed out after N s"`` once
    it ran past ``timeout`` seconds (the whole group is then stopped: SIGTERM, which the batch
    runner records, then SIGKILL after 30 s)."""
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        return f"timed out after {timeout:g} s"


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    try:  # whatever is left of the group (a kernel the runner started)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def parse_parts(text: str) -> tuple[str, ...]:
    """``"tests,lrp"`` -> ("tests", "lrp"), checked against :data:`PARTS`."""
    parts = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in parts if t not in PARTS]
    if bad or not parts:
        raise ValueError(f"unknown part {bad[0]!r} in --parts" if bad else "--parts names no part")
    return parts


SERIES_TIMEOUT_S = 900
"""Default seconds the smoke series may run on the device."""


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes; parts training and lrp unless --parts says otherwise (tests the script)")
    ap.add_argument("--parts", default=None, help=f"comma-separated, of {', '.join(PARTS)} (default: all)")
    ap.add_argument("--series-timeout", type=float, default=SERIES_TIMEOUT_S,
                    help=f"seconds the smoke series may run ({SERIES_TIMEOUT_S})")
    ap.add_argument("--out", default="gpu_check.json", help="where to write the measured numbers")
    args = ap.parse_args(argv)
    try:
        dev = config.parse_device(args.device)
        parts = parse_parts(args.parts or ("training,lrp" if args.quick else ",".join(PARTS)))
    except ValueError as err:
        ap.error(str(err))
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
    if "tests" in parts:
        result["cuda_tests_exit"] = _run([sys.executable, "-m", "pytest", "-q", "-m", "cuda",
                                          *cuda_test_files(), "-p", "no:cacheprovider"])
    if "series" in parts:
        result.update(smoke_series(args.device, args.series_timeout))
    width, steps, n = (0.0625, 3, 200) if args.quick else (1.0, 400, 5000)
    if "training" in parts:
        result.update(training_throughput(dev, width=width, steps=steps, compile_step=not args.quick))
    if "lrp" in parts:
        result.update(lrp_seconds(dev, width=width, n=n))
    for k, v in result.items():
        print(f"{k:45s} {v:.1f}" if isinstance(v, float) else f"{k:45s} {v}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def smoke_series(device: str, timeout: float) -> dict:
    """The smoke series on ``device`` through the batch runner, in a temporary artifacts folder:
    its exit status (or time-out) and seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        status = _run([sys.executable, "-m", "helpers.tools.run", "--profile", "smoke"],
                      {config.ARTIFACTS_ENV: tmp, config.DEVICE_ENV: device}, timeout)
        return {"smoke_series_exit": status, "smoke_series_s": time.perf_counter() - start}

if __name__ == "__main__":
    main(sys.argv[1:])
