"""Data-parallel baseline training over several processes with ``torch.distributed``.

    torchrun --nproc_per_node 4 -m helpers.tools.distributed --profile paper_scratch

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
import os
import sys

import torch
import torch.distributed as dist

from ..core import artifacts, config, data, models
from ..methods import training
from ..core.parallel import Context, barrier, context, local_profile, replicate


def _setup() -> tuple[Context, torch.device]:
    if "RANK" not in os.environ:
        raise SystemExit("run this under torchrun: torchrun --nproc_per_node N -m helpers.tools.distributed ...")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    dev = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return context(), dev


def train(profile: str, epochs: int | None = None, data_dir: str | None = None,
          stop_after: int | None = None) -> None:
    """Train (or resume) the profile's baseline on every process of the group."""
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
