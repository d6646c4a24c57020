"""What a reader opening the stored notebooks in JupyterLab sees: no progress-bar debris, no
warnings, no machine paths or timestamps, and a kernelspec JupyterLab does not rewrite."""
import re

import nbformat
import pytest

from helpers.core import config
from helpers.tools import run

_PATH = re.compile(r"/(work|tmp|root|home|Users)/")
_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_BAR = re.compile(r"\d+/\d+ \[\d{2}:\d{2}<|\d+%\|")


def problems(nb) -> list[str]:
    """Each debris, warning, leak or kernelspec mismatch found in notebook ``nb``."""
    out = [] if nb.metadata.get("kernelspec") == run.KERNELSPEC else [f"kernelspec {nb.metadata.get('kernelspec')}"]
    for i, cell in enumerate(nb.cells):
        texts = [cell.source] + [o.get("text", "") if o.output_type == "stream" else
                                 str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", [])]
        for o in cell.get("outputs", []):
            if o.output_type == "stream" and o.name == "stderr":
                out.append(f"cell {i}: stderr output {o.text[:80]!r}")
            interactive = "interactive" in cell.get("metadata", {}).get("tags", [])  # the explorer's widgets
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {}) and not interactive:
                out.append(f"cell {i}: a saved progress widget")
        for text in texts:
            for name, pattern in (("absolute path", _PATH), ("timestamp", _STAMP), ("progress bar", _BAR)):
                if pattern.search(text):
                    out.append(f"cell {i}: {name} in {pattern.search(text).group(0)!r}")
            if "Warning:" in text:
                out.append(f"cell {i}: a warning")
    return out


@pytest.mark.parametrize("path", run.notebooks(), ids=lambda p: p.name)
def test_stored_notebooks_are_clean(path):
    assert problems(nbformat.read(path, as_version=4)) == []


PUBLISHED = sorted((config.FIGURES_ROOT / "cpu" / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.name)
def test_published_notebooks_are_clean(path):
    assert problems(nbformat.read(path, as_version=4)) == []


def test_the_check_finds_each_kind_of_debris():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="UserWarning: careful\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="  0%|          | 0/352 [00:00<?, ?it/s]"),
                    nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {}}),
                    nbformat.v4.new_output("stream", name="stdout", text="saved /work/main/x at 2026-11-29 01:15")]
    nb.cells = [cell]
    found = " | ".join(problems(nb))
    for kind in ("kernelspec", "stderr", "progress widget", "progress bar", "absolute path", "timestamp", "a warning"):
        assert kind in found, (kind, found)
