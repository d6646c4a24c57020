"""CIFAR-100 in its official ``cifar-100-python`` layout: reading, checking, splitting, batching.

The pickles hold ``data`` (N, 3072) uint8 rows, channel-major, and ``fine_labels``;
``meta`` holds ``fine_label_names``. Everything is kept as uint8 tensors in memory
(150 MB for the training set) and augmented in whole batches.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import artifacts, config
from .checkpoint import atomic_write

FOLDER = "cifar-100-python"
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
TGZ_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
NUM_CLASSES = 100
# Per-channel statistics of the official training set.
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)


class DataError(RuntimeError):
    """The dataset folder is missing, unreachable or malformed."""


@dataclass
class Split:
    """Images as uint8 (N, 3, 32, 32) and labels as int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> "Split":
        """The same images and labels on ``device`` (still uint8: 150 MB for the training set)."""
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    classes: list[str]


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) ``cifar-100-python/``.

    Order: the argument, ``$LRP_DATA_DIR``, ``data/`` in the repository. Pointing at the
    ``cifar-100-python`` folder itself works too.
    """
    root = Path(data_dir or os.environ.get(config.DATA_ENV) or config.REPO_ROOT / "data")
    return root.parent if root.name == FOLDER else root


def download(root: Path) -> None:
    """Fetch and unpack the official archive (md5-verified) through torchvision."""
    from torchvision.datasets.utils import download_and_extract_archive
    try:
        download_and_extract_archive(URL, str(root), md5=TGZ_MD5, remove_finished=True)
    except Exception as err:  # offline, refused, corrupt archive, no space...
        raise DataError(
            f"CIFAR-100 is not in {root / FOLDER} and downloading it failed ({err}). "
            f"Copy the official 'cifar-100-python' folder there, or point ${config.DATA_ENV} "
            "(or the notebook's data_dir parameter) at the folder that contains it.") from err


# What the official pickles (protocol 2, Python 2) and their protocol-4/5 re-saves reference:
# NumPy's array reconstruction and ``_codecs.encode`` for byte strings. Nothing else is admitted.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    *((f"numpy.{core}.multiarray", fn) for core in ("core", "_core") for fn in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
}


class UnsafePickleError(DataError):
    """A data pickle that references something other than plain data and NumPy arrays."""


class _DataUnpickler(pickle.Unpickler):
    """Admits dicts, lists, strings, bytes, numbers and NumPy arrays only: the promise
    ``torch.load(..., weights_only=True)`` makes for checkpoints, made for the data files."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise UnsafePickleError(f"refers to {module}.{name}, which a CIFAR-100 file never holds")
        return super().find_class(module, name)


def safe_unpickle(f) -> object:
    """``pickle.load(f, encoding="latin1")`` restricted to plain data and NumPy arrays."""
    return _DataUnpickler(f, encoding="latin1").load()


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = safe_unpickle(f)
    except FileNotFoundError:
        raise DataError(f"{path} is missing: the {FOLDER} folder needs 'train', 'test' "
                        "and 'meta'") from None
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path} was refused without running it: it {err}. Replace it "
                                f"with the official file ({URL})") from None
    except Exception as err:
        raise DataError(f"{path} is not a readable CIFAR-100 pickle ({err})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict")
    return obj


def _read_part(path: Path) -> Split:
    part = _unpickle(path)
    missing = {"data", "fine_labels"} - set(part)
    if missing:
        raise DataError(f"{path} lacks the key(s) {sorted(missing)}; found {sorted(part)}")
    x = np.asarray(part["data"])
    y = np.asarray(part["fine_labels"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must be uint8 of shape (N, 3072), "
                        f"got {x.dtype} {x.shape}")
    if y.shape != (len(x),):
        raise DataError(f"{path}: {len(x)} images but 'fine_labels' has shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels must lie in 0..{NUM_CLASSES - 1}, "
                        f"found {y.min()}..{y.max()}")
    return Split(torch.from_numpy(x.reshape(-1, 3, 32, 32).copy()),
                 torch.from_numpy(y.astype(np.int64)))


def read_cifar100(folder: Path) -> tuple[Split, Split, list[str]]:
    """Read and check the train split, test split and class names in ``folder``."""
    train, test = _read_part(folder / "train"), _read_part(folder / "test")
    meta = _unpickle(folder / "meta")
    names = meta.get("fine_label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise DataError(f"{folder / 'meta'}: 'fine_label_names' must list {NUM_CLASSES} names")
    return train, test, names


def load_cifar100(data_dir=None, allow_download: bool = True):
    """Train split, test split and class names; downloads into an empty data root."""
    root = data_root(data_dir)
    if not (root / FOLDER).is_dir():
        if not allow_download:
            raise DataError(f"no {FOLDER} folder in {root}; set ${config.DATA_ENV} to the "
                            "folder that contains it")
        download(root)
    return read_cifar100(root / FOLDER)


def write_synthetic_cifar100(folder: Path, train_per_class: int, test_per_class: int,
                             seed: int = 0) -> Path:
    """Write a small learnable dataset in the official format into ``folder/cifar-100-python``.

    Each class has a smooth random colour pattern (4x4 upsampled to 32x32); images are that
    pattern plus noise, so a small network can learn it within an epoch.
    """
    g = torch.Generator().manual_seed(seed)
    colour = torch.rand(NUM_CLASSES, 3, 1, 1, generator=g)
    pattern = F.interpolate(torch.rand(NUM_CLASSES, 3, 4, 4, generator=g), size=32,
                            mode="bilinear", align_corners=False)
    protos = 0.5 * colour + 0.5 * pattern
    out = Path(folder) / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", train_per_class), ("test", test_per_class)):
        y = torch.arange(NUM_CLASSES).repeat_interleave(n)
        noise = torch.rand(len(y), 3, 32, 32, generator=g)
        x = (255 * (0.8 * protos[y] + 0.2 * noise)).round().to(torch.uint8)
        obj = {"data": x.reshape(len(y), -1).numpy(), "fine_labels": y.tolist(),
               "coarse_labels": (y // 5).tolist(), "batch_label": f"synthetic {part}"}
        _pickle_atomic(obj, out / part)
    names = [f"class_{i:02d}" for i in range(NUM_CLASSES)]
    _pickle_atomic({"fine_label_names": names,
                    "coarse_label_names": [f"super_{i:02d}" for i in range(20)]}, out / "meta")
    return out


def _pickle_atomic(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(pickle.dumps(obj, protocol=4)))


def _sample_per_class(y: torch.Tensor, per_class: int, seed: int, keep_one: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < per_class + keep_one:
            raise DataError(f"class {int(c)} has {len(idx)} images; cannot take {per_class}"
                            + (" and keep one" if keep_one else ""))
        picked.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.sort(torch.cat(picked)).values


def stratified_split(y: torch.Tensor, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held_out): ``per_class`` images of every class held out, seeded."""
    held = _sample_per_class(y, per_class, seed, keep_one=True)
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[held] = False
    return torch.nonzero(mask).flatten(), held


def subset(train: Split, test: Split, per_class: int, seed: int) -> tuple[Split, Split]:
    """``per_class`` seeded images of every class from ``train`` (what is left of the official
    training split once the validation images are held out), and as many test images where the
    test split has them (all of them where it has fewer): a profile's quick try
    (``subset_per_class``)."""
    have = int(torch.bincount(train.y).min())
    if per_class > have:
        raise DataError(f"subset_per_class {per_class} is larger than the data: the training and validation "
                        f"images come from the official training split, {have + per_class} images in its smallest "
                        f"class; pass at most {(have + per_class) // 2} (0: the whole dataset)")
    test_per_class = min(per_class, int(torch.bincount(test.y).min()))
    return class_balanced_sample(train, per_class, seed), class_balanced_sample(test, test_per_class, seed)


def load_data(profile: config.Profile, data_dir=None) -> Data:
    """The profile's train / validation / test splits and class names."""
    if profile.dataset == "synthetic":
        folder = artifacts.synthetic_data(profile).path
        if not (folder / FOLDER / "meta").exists():
            write_synthetic_cifar100(folder, profile.synthetic_train_per_class,
                                     profile.synthetic_test_per_class, profile.seed)
        train, test, names = read_cifar100(folder / FOLDER)
    else:
        train, test, names = load_cifar100(data_dir)
    n = profile.subset_per_class
    keep, held = stratified_split(train.y, profile.held_out_per_class, profile.seed)
    train, val = Split(train.x[keep], train.y[keep]), Split(train.x[held], train.y[held])
    if n:
        train, test = subset(train, test, n, profile.seed)
    return Data(train, val, test, names)


def class_balanced_sample(split: Split, per_class: int, seed: int) -> Split:
    """A seeded sample of ``per_class`` images of every class (reference data for scores)."""
    idx = _sample_per_class(split.y, per_class, seed, keep_one=False)
    return Split(split.x[idx], split.y[idx])


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with ``pad``-pixel zero padding and horizontal flip, for a whole batch.

    x : uint8 or float (B, C, H, W), on any device. The offsets and flips are drawn from the
    CPU ``generator`` (so a batch on the GPU gets the same crops as on the CPU for the same
    generator state) and applied on ``x``'s device in one gather.
    """
    b, c, h, w = x.shape
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    dev = x.device
    oy, ox, flip = oy.to(dev, non_blocking=True), ox.to(dev, non_blocking=True), flip.to(dev, non_blocking=True)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    out = padded[torch.arange(b, device=dev)[:, None, None, None],
                 torch.arange(c, device=dev)[None, :, None, None], rows, cols]
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def normalize(x: torch.Tensor, size: int = 32) -> torch.Tensor:
    """uint8 (B, 3, 32, 32) -> float32 normalised by the official train statistics (and resized
    bilinearly to ``size``), on ``x``'s device."""
    x = x.float().div_(255)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize` (at the network's input size), clipped to [0, 1]."""
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)


def batches(split: Split, batch_size: int, size: int = 32, shuffle: bool = False,
            generator: torch.Generator | None = None, train_augment: bool = False):
    """Yield normalised float batches ``(x, y)``; shuffling and augmentation use ``generator``.

    The batches are made on ``split``'s device: a split moved to the GPU once
    (:meth:`Split.to`) is indexed, augmented, normalised and resized there, so the CPU only
    draws the random numbers. The order and the augmentation are the same on every device.
    """
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(split.x.device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        x = split.x[idx]
        if train_augment:
            x = augment(x, generator)
        yield normalize(x, size), split.y[idx]
