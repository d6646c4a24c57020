"""Progress a person can follow: live bars in JupyterLab, plain lines under the batch runner.

Under ``python -m helpers.tools.run`` (which sets ``$LRP_PROGRESS``) each step of a long loop prints
one line to the kernel process's own standard error, which the runner's terminal shows and
the executed notebook never stores. Elsewhere tqdm draws its bar, unless progress bars are
off (``$TQDM_DISABLE`` or ``$CI``).
"""
from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm

from . import config

ENV = "LRP_PROGRESS"
"""Set by the runner: the prefix of each progress line (the notebook's name)."""


def lines_enabled() -> bool:
    return bool(os.environ.get(ENV))


def line(message: str) -> None:
    """One progress line on the runner's terminal (no-op outside the runner)."""
    if lines_enabled():
        print(f"  [{os.environ[ENV]}] {time.strftime('%H:%M:%S')} {message}", file=sys.__stderr__, flush=True)


def steps(items: list, desc: str):
    """``items`` with progress: a tqdm bar interactively, or a line per item under the runner."""
    if not lines_enabled():
        yield from tqdm(items, desc=desc, leave=False, mininterval=2, disable=config.quiet())
        return
    for i, item in enumerate(items, start=1):
        line(f"{desc} {i}/{len(items)}: {item}")
        yield item


def bar(iterable, desc: str = "", total: int | None = None):
    """A tqdm bar for inner loops (batches): silent under the runner, whose lines come from the
    loops around it."""
    return tqdm(iterable, desc=desc, total=total, leave=False, mininterval=2,
                disable=config.quiet() or lines_enabled())
