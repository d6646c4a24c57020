"""Score files: saving and loading criteria scores with the metadata that ties them to a model,
and the tables the relevance notebook shows."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from torch import nn

from ..core import checkpoint, measure
from .criteria import ScoreError, check_scores, compute_scores
from ..core.vocabulary import GRADIENT, LRP

HINT = "run 02_relevance.ipynb first"


def fingerprint(model: nn.Module) -> str:
    """A short hash of the model's weights: scores remember which model they belong to."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def path_for(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}.pt"


def save(scores: dict, model: nn.Module, folder: Path, name: str | None = None) -> Path:
    """Write ``scores`` (from ``compute_scores``) tagged with the model's fingerprint."""
    return checkpoint.save({**scores, "model_fingerprint": fingerprint(model)},
                           path_for(folder, name or scores["criterion"]))


def load(folder: Path, name: str, model: nn.Module, model_fingerprint: str | None = None) -> dict:
    """Load scores and check they belong to ``model`` (same weights, same layers);
    ``model_fingerprint``: the model's :func:`fingerprint`, when already known."""
    path = path_for(folder, name)
    obj = checkpoint.load(path, kind="scores", hint=HINT)
    expected = model_fingerprint or fingerprint(model)
    if obj.get("model_fingerprint") != expected:
        raise ScoreError(f"{path} holds scores of another model (fingerprint "
                         f"{obj.get('model_fingerprint')} != {expected}): {HINT} again "
                         "for the current baseline")
    check_scores(model, obj, "filter")
    check_scores(model, obj, "weight")
    return obj


class Saved(Mapping):
    """The score sets ``names`` of ``model`` saved in ``folder``, each read from disk (and
    checked, :func:`load`) when it is used and not kept: whoever holds one criterion's weight
    scores (0.54 GB for torchvision VGG-16) does not hold the others. A missing file is an
    error when the mapping is made."""

    def __init__(self, folder: Path, names, model: nn.Module, model_fingerprint: str | None = None):
        self.folder, self.names, self.model = Path(folder), list(dict.fromkeys(names)), model
        for name in self.names:
            if not path_for(folder, name).exists():
                raise checkpoint.CheckpointError(f"{path_for(folder, name)} does not exist: {HINT}")
        self._fingerprint = model_fingerprint or fingerprint(model)

    def only(self, names) -> "Saved":
        """The same sets, restricted to ``names`` (in that order)."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise KeyError(f"no score set {', '.join(unknown)} here; these are {', '.join(self.names)}")
        return Saved(self.folder, names, self.model, self._fingerprint)

    def __getitem__(self, name: str) -> dict:
        if name not in self.names:
            raise KeyError(name)
        return load(self.folder, name, self.model, self._fingerprint)

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def filter_table(all_scores: dict[str, dict]) -> pd.DataFrame:
    """Long table: criterion, layer, filter index, score (layer-normalised)."""
    rows = []
    for name, s in all_scores.items():
        for layer, v in s["filter"].items():
            rows.append(pd.DataFrame({"criterion": name, "layer": layer,
                                      "filter": range(len(v)), "score": v.numpy()}))
    return pd.concat(rows, ignore_index=True)


def rank_correlation(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation between criteria, over all filters, ranked within each layer
    (so layer sizes don't dominate)."""
    t = table.copy()
    t["rank"] = t.groupby(["criterion", "layer"])["score"].rank(pct=True)
    wide = t.pivot_table(index=["layer", "filter"], columns="criterion", values="rank")
    return wide.corr(method="pearson")  # Pearson on ranks = Spearman


def timing_table(all_scores: dict[str, dict], reference: str = GRADIENT) -> pd.DataFrame:
    """Seconds each criterion took, and the ratio to ``reference`` (when it was computed)."""
    ref = all_scores[reference]["seconds"] if reference in all_scores else float("nan")
    return pd.DataFrame([{"criterion": n, "images": s["n_images"], "seconds": round(s["seconds"], 3),
                          f"x_{reference}": round(s["seconds"] / ref, 3)} for n, s in all_scores.items()])


def benchmark(model: nn.Module, ref, names=(LRP, GRADIENT), repeats: int = 3,
              budget_s: float = measure.LATENCY_BUDGET_S, **kwargs) -> pd.DataFrame:
    """Median seconds of each criterion on the same reference images, run in alternation after
    one warm-up call each (so neither pays for first-call set-up), and the ratio to the last.
    The warm-up round, timed, sizes the rest: the timed rounds are cut to what fits in
    ``budget_s``, never below :data:`helpers.core.measure.MIN_ROUNDS` (as latency is)."""
    first = sum(compute_scores(model, ref, n, **kwargs)["seconds"] for n in names)
    _, repeats = measure.rounds(first, 1, repeats, budget_s)
    times = {n: [] for n in names}
    for _ in range(repeats):
        for n in names:
            times[n].append(compute_scores(model, ref, n, **kwargs)["seconds"])
    med = {n: float(pd.Series(t).median()) for n, t in times.items()}
    return pd.DataFrame([{"criterion": n, "images": len(ref), "median_seconds": round(med[n], 3),
                          f"x_{names[-1]}": round(med[n] / med[names[-1]], 3)} for n in names])
