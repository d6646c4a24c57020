"""Data-parallel baseline training over several processes with ``torch.distributed``.

    torchrun --nproc_per_node 4 -m helpers.distributed --profile paper_scratch

Each process trains a replica wrapped in ``DistributedDataParallel`` (on GPUs BatchNorm turned
into ``SyncBatchNorm``, so statistics cover the whole batch) on its shard of the training split
(``DistributedSampler``, reshuffled every epoch from the profile's seed). Each process takes
``batch_size / N`` images per step and the gradients are averaged, so N processes take the same
optimizer steps, on the same global batches, as one. Rank 0 writes the training state after
every epoch and the model at the end (``artifacts/<profile>/baseline/``, the files notebook 01
writes and reads); a re-run resumes from them, with any number of processes. CUDA processes talk
over NCCL, one GPU each; without CUDA the processes run on the CPU over gloo (how the tests run it).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from . import artifacts, config
from .data import Split


@dataclass(frozen=True)
class Context:
    """This process's place in the group: rank ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def context() -> Context:
    """The running group, or a single process when ``torch.distributed`` is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size())
    return Context()


def barrier() -> None:
    if context().world > 1:
        dist.barrier()


def local_profile(p: config.Profile, ctx: Context) -> config.Profile:
    """The profile each process trains with: ``batch_size / world`` images per step."""
    if p.batch_size % ctx.world:
        raise ValueError(f"the {p.name} profile's batch size {p.batch_size} does not divide over "
                         f"{ctx.world} processes: use a --nproc_per_node that divides it, or a batch "
                         "size that is a multiple of the process count")
    return dataclasses.replace(p, batch_size=p.batch_size // ctx.world)


def shard(split: Split, epoch: int, seed: int, ctx: Context) -> Split:
    """This process's part of ``split`` in ``epoch``: a ``DistributedSampler`` permutation seeded
    by ``seed`` and the epoch (every process the same length; the last ones padded by repeats)."""
    sampler = DistributedSampler(range(len(split)), num_replicas=ctx.world, rank=ctx.rank,
                                 shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    idx = torch.tensor(list(sampler), dtype=torch.long)
    return Split(split.x[idx], split.y[idx])


def replicate(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped for data-parallel training (sharing its parameters; ``model`` keeps its
    own state-dict keys), with SyncBatchNorm on CUDA. SyncBatchNorm has no CPU kernels: CPU
    processes (gloo) keep per-process BatchNorm statistics, broadcast from rank 0 each step."""
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _setup() -> tuple[Context, torch.device]:
    if "RANK" not in os.environ:
        raise SystemExit("run this under torchrun: torchrun --nproc_per_node N -m helpers.distributed ...")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    dev = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return context(), dev


def train(profile: str, epochs: int | None = None, data_dir: str | None = None,
          stop_after: int | None = None) -> None:
    """Train (or resume) the profile's baseline on every process of the group."""
    from . import data, models, training
    ctx, dev = _setup()
    try:
        p = config.get_profile(profile, epochs=epochs, device=dev.type)
        local_profile(p, ctx)  # fail before any work when the batch does not divide
        config.seed_everything(p.seed)
        if not ctx.main:  # rank 0 writes generated data once; the others read it after
            barrier()
        d = data.load_data(p, data_dir)
        if ctx.main:
            barrier()
        model = models.create_model(p).to(dev)
        spec, folder = models.spec_for(p), artifacts.baseline_dir(p).path
        history = training.fit(model, d, p, folder / "train_state.pt", spec, stop_after=stop_after,
                               replica=replicate(model, dev))
        if ctx.main and len(history) == p.epochs:
            training.save_model(model, spec, folder / "model.pt", p, history=history.to_dict(orient="list"),
                                processes=ctx.world)
            print(f"saved {folder / 'model.pt'} ({ctx.world} processes)", flush=True)
        barrier()
    finally:
        dist.destroy_process_group()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=os.environ.get(config.PROFILE_ENV) or config.DEFAULT_PROFILE,
                    help=f"one of {', '.join(config.PROFILES)}")
    ap.add_argument("--epochs", type=int, help="override the profile's epochs")
    ap.add_argument("--data-dir", help="folder holding cifar-100-python/ (default $LRP_DATA_DIR, else data/)")
    ap.add_argument("--stop-after", type=int, help="end after this many epochs (the rest resumes later)")
    args = ap.parse_args(argv)
    try:
        train(args.profile, args.epochs, args.data_dir, args.stop_after)
    except ValueError as err:
        ap.error(str(err))


if __name__ == "__main__":
    main(sys.argv[1:])
