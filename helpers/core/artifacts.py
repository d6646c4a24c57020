"""The artifact contract: every file one notebook writes for another, named once.

Each function returns an :class:`Artifact`: its path under ``artifacts/<profile>/`` and the
notebook (or command) that produces it, so a missing file names what to run. Notebooks and
helpers ask here instead of spelling paths.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from . import config

T = TypeVar("T")


@dataclass(frozen=True)
class Artifact:
    path: Path
    producer: str  # notebook stem (or command) that writes it

    @property
    def hint(self) -> str:
        what = f"{self.producer}.ipynb" if self.producer[:2].isdigit() else self.producer
        return f"run {what} first"

    def exists(self) -> bool:
        return self.path.exists()


def resumable(path: Path, compute: Callable[[], T], save: Callable[[T, Path], None], load: Callable[[Path], T],
              reread: bool = False) -> T:
    """The one resumable step: ``load(path)`` when a result is saved there, else ``compute()``,
    written by ``save(value, path)``, which writes atomically (the ``checkpoint`` writers do).
    ``load`` refuses a result that does not match what is asked now (another model, recipe or
    budget), with a message that says what to delete. ``reread``: return what ``load`` reads
    back from the new file rather than the computed value, so a fresh and a resumed run hand
    on the same types (a CSV's columns, say)."""
    path = Path(path)
    if path.exists():
        return load(path)
    value = compute()
    save(value, path)
    return load(path) if reread else value


def baseline(p: config.Profile) -> Artifact:
    """The trained baseline (a self-describing model file)."""
    return Artifact(baseline_dir(p).path / "model.pt", "01_baseline_training")


def baseline_dir(p: config.Profile) -> Artifact:
    """The baseline's folder: ``train_state.pt`` while training, ``model.pt`` at the end."""
    return Artifact(p.artifacts / "baseline", "01_baseline_training")


def scores(p: config.Profile) -> Artifact:
    """Folder of score files, one ``<criterion>.pt`` per criterion (``helpers.methods.scores``)."""
    return Artifact(p.artifacts / "scores", "02_relevance")


def pruned(p: config.Profile, criterion: str, allocation: str) -> Artifact:
    """A structurally pruned, not fine-tuned model of notebook 04."""
    return Artifact(p.artifacts / "pruned" / f"{criterion}_{allocation}.pt", "04_structured_pruning")


def lowdata(p: config.Profile) -> Artifact:
    """The low-data study's saved blocks (one folder per study key)."""
    return Artifact(p.artifacts / "lowdata", "05_low_data")


def finetuned(p: config.Profile, run: str) -> Artifact:
    """A folder of notebook 06's fine-tuned runs (``routes_<recipe>``), or of one run in it
    (``routes_<recipe>/<route>_<criterion>_<point>_s<seed>``: :func:`helpers.studies.routes.run_name`)."""
    return Artifact(p.artifacts / "finetuned" / run, "06_fine_tuning")


def finetuned_model(p: config.Profile, run: str) -> Artifact:
    """The selected model of one fine-tuned run."""
    return Artifact(finetuned(p, run).path / "model.pt", "06_fine_tuning")


def report_point_runs(p: config.Profile) -> Artifact:
    """The table of notebook 06's runs at the report's operating point (one row per criterion
    and seed, ``run`` naming each model): notebooks 07 and 08 read their models from it."""
    return Artifact(p.artifacts / "finetuned" / "report_point_runs.csv", "06_fine_tuning")


def quantized(p: config.Profile) -> Artifact:
    """Folder of quantized models of notebook 07."""
    return Artifact(p.artifacts / "quantized", "07_quantization")


def executed_notebooks(p: config.Profile) -> Artifact:
    """Executed copies of the notebooks of the last batch run (published ones are under figures/)."""
    return Artifact(p.artifacts / "notebooks", "python -m helpers.tools.run")


def notebook_times(p: config.Profile) -> Artifact:
    """Wall time of each notebook of the last batch run."""
    return Artifact(p.artifacts / "notebook_times.json", "python -m helpers.tools.run")


def synthetic_data(p: config.Profile) -> Artifact:
    """The generated dataset of the smoke profile."""
    return Artifact(p.artifacts / "data", "helpers.core.data.load_data")
