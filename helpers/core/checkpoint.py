"""Self-describing checkpoints, written atomically and read with ``weights_only=True``."""
from __future__ import annotations

import io
import json
import lzma
import os
import tempfile
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint or result file that is missing, truncated, corrupt or of the wrong kind."""


def atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would follow the umask
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def plain(obj):
    """``obj`` with NumPy scalars turned into Python numbers, so ``weights_only`` loads it."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if hasattr(obj, "item") and not isinstance(obj, torch.Tensor):
        return obj.item()
    return obj


def save(obj: dict, path: Path) -> Path:
    """``torch.save`` atomically; holds tensors, numbers, strings, lists and dicts only. Written
    through an open file, not a path: ``torch.save`` to a path names the archive's records after
    the file, here a random temporary name, so the same object would give other bytes (and
    another LZMA size); to a file object it names them ``archive``, as to memory, and streams
    (a training state of the paper model is 1.6 GB, never held twice in memory)."""
    obj = plain(obj)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    return atomic_write(path, write)


def save_json(obj, path: Path) -> Path:
    text = json.dumps(plain(obj), indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def save_text(text: str, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def load(path: Path, kind: str | None = None, hint: str = "") -> dict:
    """Load a file written by :func:`save` (memory-mapped: a score set used for its filter scores
    never reads its 0.54 GB of weight scores of the paper model), or the same file
    LZMA-compressed (``.xz``, decompressed in memory); check its ``kind`` entry when given.

    ``hint`` says how to make the file if it is missing (e.g. "run 01_baseline_training first").
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist" + (f": {hint}" if hint else ""))
    try:
        if path.suffix == ".xz":
            obj = torch.load(io.BytesIO(lzma.decompress(path.read_bytes())), map_location="cpu", weights_only=True)
        else:  # mapped, not read: a tensor's pages come into memory only when it is used
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise CheckpointError(f"{path} is truncated or corrupt and cannot be read "
                              f"({type(err).__name__}); delete it and re-create it"
                              + (f" ({hint})" if hint else "")) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    if kind is not None and obj.get("kind") != kind:
        raise CheckpointError(f"{path} is a {obj.get('kind')!r} file, expected {kind!r}")
    return obj


def load_json(path: Path, hint: str = ""):
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist" + (f": {hint}" if hint else ""))
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); delete it and re-create it") from None
