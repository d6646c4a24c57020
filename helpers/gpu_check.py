"""``make gpu-check``: everything that needs a GPU, as one script for a GPU machine (under 8 minutes).

1. the unit tests marked ``cuda`` (skipped on machines without CUDA);
2. the smoke series on CUDA, through the batch runner, into a temporary artifacts folder;
3. throughput of ``paper_scratch`` training (full-width VGG-16-BN, bf16 autocast) — through the
   series' own training step, and the model step alone on batches already on the GPU, its ceiling;
4. LRP scoring of 5,000 images (the paper_scratch network, ``epsilon_plus_flat``).

Prints one table and writes it as JSON (``--out``). ``--device cpu --quick`` runs parts 3 and 4 on
tiny sizes, so the script itself is tested where there is no GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import config, criteria, data, models, training


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _fake_split(n: int, seed: int = 0) -> data.Split:
    g = torch.Generator().manual_seed(seed)
    return data.Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                      torch.arange(n) % data.NUM_CLASSES)


def training_throughput(dev: torch.device, width: float = 1.0, batch: int = 128, steps: int = 60) -> dict:
    """Images/s of training full-width VGG-16-BN: the series' epoch loop (``training.train_epoch``:
    CPU batches, augmentation, transfer) and the bare model step on batches kept on the device."""
    p = config.get_profile("paper_scratch", width=width, batch_size=batch, device=dev.type)
    model = models.create_model(p)
    opt, sched = training.make_optimizer(model, p, 10 * steps)
    split = _fake_split(batch * steps)
    g = torch.Generator().manual_seed(0)
    training.train_epoch(model, split, opt, sched, p, g, max_steps=3)  # warm-up
    _sync(dev)
    series = training.train_epoch(model, split, opt, sched, p, g)["img_per_s"]
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 100, (batch,), device=dev)
    _sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        with models.autocast(dev):  # the series' own: bf16 on CUDA
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(dev)
    bare = batch * steps / (time.perf_counter() - start)
    return {"train_img_per_s_series_loop": series, "train_img_per_s_model_step": bare,
            "paper_scratch_200_epochs_min_series_loop": 200 * 45_000 / series / 60}


def lrp_seconds(dev: torch.device, width: float = 1.0, n: int = 5000) -> dict:
    """Seconds to score every filter and weight by LRP on ``n`` images (100 per batch)."""
    torch.manual_seed(0)
    model = models.build_model(models.vgg16_bn_spec(width)).to(dev).eval()
    ref = _fake_split(n)
    criteria.compute_scores(model, _fake_split(100), "lrp")  # warm-up
    _sync(dev)
    start = time.perf_counter()
    criteria.compute_scores(model, ref, "lrp")
    return {f"lrp_seconds_{n}_images": time.perf_counter() - start}


def _run(cmd: list[str], env: dict | None = None, timeout: int = 300) -> int:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env={**os.environ, **(env or {})}, timeout=timeout).returncode


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, parts 3 and 4 only (tests the script)")
    ap.add_argument("--out", default="gpu_check.json", help="where to write the measured numbers")
    args = ap.parse_args(argv)
    try:
        dev = config.parse_device(args.device)
    except ValueError as err:
        ap.error(str(err))
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
    if not args.quick:
        result["cuda_tests_exit"] = _run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests",
                                          "-p", "no:cacheprovider"])
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result["smoke_series_exit"] = _run([sys.executable, "-m", "helpers.run", "--profile", "smoke"],
                                               {config.ARTIFACTS_ENV: tmp, config.DEVICE_ENV: args.device})
            result["smoke_series_s"] = time.perf_counter() - start
    width, steps, n = (0.0625, 3, 200) if args.quick else (1.0, 60, 5000)
    result.update(training_throughput(dev, width=width, steps=steps))
    result.update(lrp_seconds(dev, width=width, n=n))
    for k, v in result.items():
        print(f"{k:45s} {v:.1f}" if isinstance(v, float) else f"{k:45s} {v}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
