"""The process group as training sees it: this process's rank, its shard of the data, its
share of the batch, and the replica wrapper (``torch.distributed``; a single process when no
group is initialised). :mod:`helpers.methods.training` uses it; :mod:`helpers.tools.distributed` is the
``torchrun`` entry point that starts the group.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from . import config
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
