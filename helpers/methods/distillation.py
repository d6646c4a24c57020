"""Knowledge distillation from the unpruned baseline: the loss, and the teacher's logits.

Every fine-tuned run of one seed sees the same augmented batches (the data order and the
augmentation come from a generator seeded by the run's seed alone), and the teacher does not
change, so its logits are the same for every criterion and every point of that seed. They are
computed once per (teacher, training split, generator state, batch size, image size) and kept
in memory (:func:`targets`), which takes the teacher's forward pass, about a quarter of a
distillation step on the cpu profile, out of every run after the first. The values are those
the teacher gives inline: the same batches through the same network in the same layout.
"""
from __future__ import annotations

import hashlib
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from ..core.data import Split, batches
from ..core.models import autocast, device_of, is_channels_last

CACHE_BYTES = 1 << 30
"""Most teacher logits kept in memory (bytes, oldest dropped first); 0 turns the cache off.
The cpu profile needs about 9 MB per seed; a run whose logits exceed it computes them inline."""

_CACHE: dict[tuple, list[torch.Tensor]] = {}


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor,
                      temperature: float, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015): ``alpha`` T^2 KL(softmax(teacher/T) ||
    softmax(student/T)) + (1 - alpha) cross-entropy with the labels, averaged over the batch.
    Logits are (N, classes), labels (N,). The T^2 keeps the soft term's gradient scale
    independent of T."""
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    log_target=True, reduction="batchmean") * t * t
    hard = F.cross_entropy(student, y, label_smoothing=label_smoothing)
    return alpha * soft + (1 - alpha) * hard


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The teacher's float32 logits (N, classes) for a batch (N, 3, H, W) on its device (bf16
    autocast on CUDA, as in training)."""
    with autocast(device_of(teacher)):
        return teacher(x).float()


def targets(teacher: nn.Module, split: Split, batch_size: int, size: int, generator: torch.Generator,
            steps: int) -> list[torch.Tensor] | None:
    """The teacher's logits (on the CPU) for the first ``steps`` training batches that
    ``batches(split, batch_size, size, shuffle=True, generator=generator, train_augment=True)``
    will yield, ``generator`` left untouched; from the cache when an earlier call made them (a
    longer list serves a shorter one). ``None`` when they would not fit in :data:`CACHE_BYTES`:
    the caller then computes them inline."""
    head = next((m for m in reversed(list(teacher.modules())) if isinstance(m, nn.Linear)), None)
    if head is None or steps * batch_size * head.out_features * 4 > CACHE_BYTES:
        return None
    key = (_digest(teacher.state_dict().values()), _digest((split.x, split.y)),
           _digest([generator.get_state()]), batch_size, size, str(device_of(teacher)),
           is_channels_last(teacher))  # the layout sets the summation order, so the rounding
    if len(_CACHE.get(key, ())) < steps:
        _CACHE.pop(key, None)
        _CACHE[key] = _compute(teacher, split, batch_size, size, generator, steps)
        _evict()
    return _CACHE[key][:steps]


def _compute(teacher, split, batch_size, size, generator, steps) -> list[torch.Tensor]:
    replay = torch.Generator().set_state(generator.get_state())
    it = batches(split, batch_size, size, shuffle=True, generator=replay, train_augment=True)
    dev = device_of(teacher)
    teacher.eval()
    return [teacher_logits(teacher, x.to(dev)).cpu() for x, _ in itertools.islice(it, steps)]


def _evict() -> None:
    """Drop the oldest entries until the cache fits in :data:`CACHE_BYTES`."""
    def total():
        return sum(t.numel() * t.element_size() for v in _CACHE.values() for t in v)
    while len(_CACHE) > 1 and total() > CACHE_BYTES:
        _CACHE.pop(next(iter(_CACHE)))


def _digest(tensors) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, not a copy
    return h.hexdigest()
