"""Training and evaluation: SGD with Nesterov momentum, one-cycle or cosine schedule,
per-epoch history, atomic per-epoch checkpoints and exact resumption."""
from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..core import checkpoint, config, parallel, progress
from ..core.data import Data, Split, batches
from .distillation import distillation_loss, targets, teacher_logits
from ..core.models import ModelError, autocast, channels_last, cpu_state, device_of, model_from_state


class DivergenceError(RuntimeError):
    """A training run whose loss became NaN or infinite, or that fell to chance in its first
    epoch from above it: it is stopped and never reported as a result."""


def check_diverged(name: str, epoch: int, loss: float, val_acc: float | None = None,
                   chance: float = 1.0, factor: float = 2.0, start_acc: float | None = None) -> None:
    """Raise :class:`DivergenceError` naming run ``name`` if ``loss`` is not finite, or if after
    the first epoch the validation accuracy (%) is at most ``factor`` times ``chance`` (%) while
    the network started above that band (``start_acc``, its validation accuracy before the first
    epoch; ``None``: unknown, taken as above). A network that was already at chance, such as one
    pruned past recovery or trained from random weights, did not collapse: its run is a result."""
    if not torch.isfinite(torch.tensor(loss)):
        raise DivergenceError(f"{name}: the training loss became {loss} in epoch {epoch}; the run "
                              "diverged (lower the learning rate) and is not reported")
    band = factor * chance
    if epoch == 1 and val_acc is not None and val_acc <= band and (start_acc is None or start_acc > band):
        began = "" if start_acc is None else f" (it began at {start_acc:.2f} %)"
        raise DivergenceError(f"{name}: validation accuracy {val_acc:.2f} % after the first epoch is at "
                              f"chance ({chance:.2f} %){began}; the run collapsed (lower the learning rate, or "
                              "check the pruned network) and is not reported")


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 500, size: int = 32) -> dict:
    """Top-1 accuracy (%) and mean cross-entropy of ``model`` on ``split``, on the model's device."""
    dev = device_of(model)
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    with channels_last(model):
        for x, y in batches(split.to(dev), batch_size, size):
            with autocast(dev):
                out = model(x)
            loss += F.cross_entropy(out.float(), y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
    n = len(split)
    return {"acc": 100.0 * correct.item() / n, "loss": loss.item() / n}


@torch.no_grad()
def hits(model: nn.Module, split: Split, batch_size: int = 500, size: int = 32) -> torch.Tensor:
    """Which images of ``split`` ``model`` classifies correctly: bool (N,), on the CPU."""
    dev = device_of(model)
    model.eval()
    out = []
    with channels_last(model):
        for x, y in batches(split.to(dev), batch_size, size):
            with autocast(dev):
                out.append((model(x).argmax(1) == y).cpu())
    return torch.cat(out)


def make_optimizer(model: nn.Module, p: config.Profile, steps: int):
    """SGD (Nesterov) and its schedule over ``steps`` optimizer steps: one-cycle, or cosine
    after a linear warm-up over ``p.warmup`` of the steps (from a tenth of the peak)."""
    opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum,
                          weight_decay=p.weight_decay, nesterov=p.momentum > 0)
    lr = torch.optim.lr_scheduler
    if p.schedule == "onecycle":
        return opt, lr.OneCycleLR(opt, max_lr=p.lr, total_steps=steps)
    warm = _warmup_steps(p, steps)
    if warm == 0:
        return opt, lr.CosineAnnealingLR(opt, T_max=steps)
    return opt, lr.SequentialLR(opt, [lr.LinearLR(opt, start_factor=0.1, total_iters=warm),
                                      lr.CosineAnnealingLR(opt, T_max=steps - warm)], milestones=[warm])


def _warmup_steps(p: config.Profile, steps: int) -> int:
    """Warm-up steps of the cosine schedule (none for one-cycle, which warms up by itself)."""
    return 0 if p.schedule != "cosine" else min(round(p.warmup * steps), steps - 1)


def train_step(model: nn.Module, opt, x: torch.Tensor, y: torch.Tensor, p: config.Profile,
               soft: torch.Tensor | None = None, name: str = "training",
               check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the batch ``x`` (N, 3, H, W), ``y`` (N,) on the model's device
    (bf16 autocast on CUDA): the label loss, or :func:`distillation.distillation_loss` towards
    the teacher's logits ``soft`` (N, classes) when given and ``p.kd_alpha > 0``. Returns the
    logits and the loss; a non-finite loss raises :class:`DivergenceError` naming ``name``
    before any weight changes. ``check=False`` leaves that check to the caller
    (:func:`train_epoch` on CUDA, which must not wait for the GPU every step)."""
    with autocast(device_of(model)):
        out = model(x)
        loss = _loss(out.float(), y, p, soft)
    if check:
        _check_finite(loss, name)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return out, loss


def _check_finite(loss: torch.Tensor | None, name: str) -> None:
    if loss is not None and not torch.isfinite(loss):
        check_diverged(name, 0, loss.item())


def train_epoch(model, split: Split, opt, sched, p: config.Profile, generator, desc="",
                max_steps: int | None = None, teacher: nn.Module | None = None) -> dict:
    """One pass over ``split`` (or its first ``max_steps`` batches) with augmentation; returns
    mean loss, accuracy, optimizer steps taken and images/s. Runs on the model's device. With a
    ``teacher`` and ``p.kd_alpha > 0`` the loss is :func:`distillation.distillation_loss`, the
    teacher's logits from :func:`distillation.targets` (computed once per seed's batches). A
    non-finite loss stops the epoch with :class:`DivergenceError`: at once on the CPU; on CUDA
    one step later, so that the GPU never waits for the CPU (the run is discarded either way).

    On CUDA the split is copied to the GPU as uint8 once per epoch, and the batches are cut,
    augmented and normalised there; losses and hits are summed on the device and read once.
    """
    dev = device_of(model)
    model.train()
    start = time.perf_counter()
    steps = steps_per_epoch(len(split), p.batch_size)
    steps = steps if max_steps is None else min(steps, max_steps)
    distil = teacher is not None and p.kd_alpha > 0
    cached = targets(teacher, split, p.batch_size, p.input_size, generator, steps) if distil else None
    it = itertools.islice(batches(split.to(dev), p.batch_size, p.input_size, shuffle=True,
                                  generator=generator, train_augment=True), steps)
    lagged = dev.type == "cuda"
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    n, previous, name = 0, None, desc or "training"
    for i, (x, y) in enumerate(progress.bar(it, total=steps, desc=desc)):
        soft = None
        if distil:
            soft = teacher_logits(teacher, x) if cached is None else cached[i].to(dev)
        out, loss = train_step(model, opt, x, y, p, soft, name, check=not lagged)
        if lagged:
            _check_finite(previous, name)
            previous = loss.detach()
        sched.step()
        loss_sum += loss.detach().double() * len(y)
        correct += (out.argmax(1) == y).sum()
        n += len(y)
    _check_finite(previous, name)
    loss_sum, correct = loss_sum.item(), correct.item()
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum / n, "train_acc": 100.0 * correct / n, "steps": steps,
            "epoch_s": seconds, "img_per_s": n / seconds}


def _loss(out: torch.Tensor, y: torch.Tensor, p: config.Profile, soft: torch.Tensor | None) -> torch.Tensor:
    if soft is None or p.kd_alpha == 0:
        return F.cross_entropy(out, y, label_smoothing=p.label_smoothing)
    return distillation_loss(out, soft, y, p.kd_temperature, p.kd_alpha, p.label_smoothing)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def _run_config(p: config.Profile, spec: dict, steps: int) -> dict:
    """What must match for a saved training state to be resumed."""
    keys = ("batch_size", "lr", "momentum", "weight_decay", "label_smoothing", "schedule",
            "seed", "input_size", "dataset", "val_per_class")
    run = {"spec": spec, "steps": steps, **{k: getattr(p, k) for k in keys}}
    if _warmup_steps(p, steps):
        run["warmup_steps"] = _warmup_steps(p, steps)
    return run


def fit(model: nn.Module, data: Data, p: config.Profile, state_path: Path, spec: dict,
        epochs: int | None = None, stop_after: int | None = None,
        max_steps: int | None = None, replica: nn.Module | None = None,
        teacher: nn.Module | None = None, guard: str | None = None) -> pd.DataFrame:
    """Train ``model`` on its device for ``epochs`` (default ``p.epochs``), resuming from ``state_path``.

    ``max_steps`` caps the number of optimizer steps instead (the last epoch is cut short), so
    that schedules can be given equal budgets. After every epoch the model, optimizer, schedule,
    history and best-on-validation weights are written atomically to ``state_path``; a re-run
    continues where it stopped and ends with the same weights as an uninterrupted run.
    ``stop_after`` ends the call after that many epochs (to simulate an interruption). At the
    end ``model`` holds the weights of the epoch with the best validation accuracy.
    Returns the per-epoch history.

    Across processes (:mod:`helpers.core.parallel`), ``replica`` (``model`` wrapped in
    ``DistributedDataParallel``) runs the training steps: each process trains on its shard of
    the training split with ``batch_size / N`` images per step (the history's training loss and
    accuracy are rank 0's shard's), and rank 0 alone writes ``state_path``.

    ``teacher`` (the unpruned baseline, on the model's device) adds knowledge distillation with
    the profile's ``kd_alpha`` and ``kd_temperature``. ``guard`` names the run for
    :func:`check_diverged` after every epoch (fine-tuning: a run that fell to chance in its first
    epoch, from the validation accuracy measured before it, stops with :class:`DivergenceError`
    before anything is saved).
    """
    spe = steps_per_epoch(len(data.train), p.batch_size)
    total = (p.epochs if epochs is None else epochs) * spe if max_steps is None else max_steps
    if total < 1:
        raise ValueError(f"nothing to train: {total} optimizer steps")
    n_epochs = -(-total // spe)
    ctx = parallel.context()
    local = parallel.local_profile(p, ctx)
    opt, sched = make_optimizer(model, p, total)
    run = _run_config(p, spec, total)
    if teacher is not None and p.kd_alpha > 0:
        run["distillation"] = {"alpha": p.kd_alpha, "temperature": p.kd_temperature}
        teacher.eval()
    state = _resume(state_path, run, model, opt, sched)
    history, best = state["history"], state["best"]
    start_acc = evaluate(model, data.val, p.eval_batch_size, p.input_size)["acc"] if guard and not history else None
    # channels-last convolutions (about 1.2x faster); not under DistributedDataParallel, whose
    # gradient buckets are laid out for the parameters' layout at construction
    with channels_last(*((model, teacher) if replica is None else ())):
        stepper = replica or compiled_for_training(model, p)
        for epoch in range(len(history), n_epochs):
            if stop_after is not None and epoch >= stop_after:
                break
            g = torch.Generator().manual_seed(p.seed * 100_003 + epoch + 7_919 * ctx.rank)
            train = data.train if ctx.world == 1 else parallel.shard(data.train, epoch, p.seed, ctx)
            row = {"epoch": epoch + 1, **train_epoch(stepper, train, opt, sched, local, g,
                                                      f"epoch {epoch + 1}/{n_epochs}",
                                                      max_steps=total - epoch * spe, teacher=teacher)}
            val = evaluate(model, data.val, p.eval_batch_size, p.input_size)
            row.update(val_loss=val["loss"], val_acc=val["acc"], lr=sched.get_last_lr()[0])
            if guard:
                check_diverged(guard, row["epoch"], row["train_loss"], row["val_acc"], start_acc=start_acc)
            history.append(row)
            progress.line(f"{Path(state_path).parent.name}: epoch {row['epoch']}/{n_epochs}, "
                          f"validation {row['val_acc']:.1f} %")
            if best is None or row["val_acc"] > best["val_acc"]:
                best = {"epoch": row["epoch"], "val_acc": row["val_acc"],
                        "model": _best_weights(model, last=epoch + 1 == n_epochs)}
            if ctx.main:
                checkpoint.save({"kind": "train_state", "run": run, "history": history, "best": best,
                                 "model": model.state_dict(), "optimizer": opt.state_dict(),
                                 "scheduler": sched.state_dict()}, state_path)
            parallel.barrier()
    if best is not None and len(history) == n_epochs:
        model.load_state_dict(best["model"])
    return pd.DataFrame(history)


def _best_weights(model: nn.Module, last: bool) -> dict:
    """The weights to keep as the best so far, on the CPU: a copy, since training goes on, except
    after the last epoch, where the model's own tensors are the best weights (no second copy of
    a 0.54 GB model; ``torch.save`` writes shared tensors once)."""
    return {k: v.detach().cpu() if last else v.detach().cpu().clone() for k, v in model.state_dict().items()}


def compiled_for_training(model: nn.Module, p: config.Profile) -> nn.Module:
    """``model`` itself, or on CUDA with the profile's ``compile_training`` the same module under
    ``torch.compile(mode="reduce-overhead")`` (CUDA graphs: the step no longer waits for Python
    to launch each kernel; ``make gpu-check`` measures both). The weights are shared."""
    if not (p.compile_training and device_of(model).type == "cuda"):
        return model
    return torch.compile(model, mode="reduce-overhead")


def _resume(path: Path, run: dict, model, opt, sched) -> dict:
    if not Path(path).exists():
        return {"history": [], "best": None}
    state = checkpoint.load(path, kind="train_state")
    if state["run"] != run:
        changed = sorted(k for k in run if state["run"].get(k) != run[k])
        raise checkpoint.CheckpointError(
            f"{path} belongs to a run with different settings ({', '.join(changed)}); "
            "delete it to start over, or restore those settings to resume")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return state


def save_model(model: nn.Module, spec: dict, path: Path, p: config.Profile, **info) -> Path:
    """A self-describing model file: spec, weights (as CPU tensors, wherever the model runs),
    the profile that made it, and ``info``."""
    return checkpoint.save({"kind": "model", "spec": spec, "model": cpu_state(model),
                            "profile": dataclasses.asdict(p), **info}, path)


def load_artifact(a, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """:func:`load_model` of an :class:`helpers.core.artifacts.Artifact` (a missing file names its notebook)."""
    return load_model(a.path, a.hint, device)


def load_model(path: Path, hint: str = "", device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model saved by :func:`save_model` on ``device``; returns ``(model, file contents)``,
    the contents without the weights (the model holds them: a second copy would double a
    134 M-parameter model's memory for as long as the caller keeps the contents)."""
    obj = checkpoint.load(path, kind="model", hint=hint)
    try:
        return model_from_state(obj["spec"], obj.pop("model")).to(device), obj
    except ModelError as err:
        raise checkpoint.CheckpointError(f"{path}: {err}") from None


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted classes (on the CPU) of normalised images ``x``, computed on the model's device."""
    return model.eval()(x.to(device_of(model))).argmax(1).cpu()
