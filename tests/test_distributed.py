"""Data-parallel training: two CPU processes over gloo, as torchrun starts them on GPUs."""
import os
import subprocess
import sys

import pytest

from helpers.core import checkpoint, config
from helpers.methods import training


def _torchrun(artifacts, nproc, *args):
    env = {**os.environ, config.ARTIFACTS_ENV: str(artifacts), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "-m", "helpers.tools.distributed", "--profile", "smoke", *args],
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_train_write_one_checkpoint_lower_the_loss_and_resume(tmp_path):
    first = _torchrun(tmp_path, 2, "--epochs", "2", "--stop-after", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    folder = tmp_path / "smoke" / "baseline"
    assert sorted(p.name for p in folder.iterdir()) == ["train_state.pt"]  # interrupted after epoch 1
    again = _torchrun(tmp_path, 2, "--epochs", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt", "train_state.pt"]  # rank 0 alone writes
    obj = checkpoint.load(folder / "model.pt")
    losses = obj["history"]["train_loss"]
    assert len(losses) == 2 and losses[1] < losses[0] and obj["processes"] == 2
    model, _ = training.load_model(folder / "model.pt")  # reloads as a plain BatchNorm model
    assert not any("Sync" in type(m).__name__ for m in model.modules())


def test_a_batch_that_does_not_divide_over_the_processes_is_refused():
    from helpers.core import parallel
    p = config.get_profile("smoke")  # batch 32
    assert parallel.local_profile(p, parallel.Context(1, 4)).batch_size == 8
    with pytest.raises(ValueError, match="batch size 32 does not divide over 3 processes: use a --nproc_per_node"):
        parallel.local_profile(p, parallel.Context(0, 3))


@pytest.mark.parametrize("world, rank", [(2, 0), (2, 1), (3, 2)])
def test_shards_cover_the_split_and_change_every_epoch(world, rank):
    import torch
    from helpers.core import data, parallel
    split = data.Split(torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.arange(10))
    shards = [parallel.shard(split, 0, 0, parallel.Context(r, world)).y for r in range(world)]
    assert sorted(set(torch.cat(shards).tolist())) == list(range(10))
    assert len({len(s) for s in shards}) == 1
    ctx = parallel.Context(rank, world)
    assert not torch.equal(parallel.shard(split, 0, 0, ctx).y, parallel.shard(split, 1, 0, ctx).y)
