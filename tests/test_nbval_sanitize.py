"""nbval passes another CPU's trajectory yet fails a notebook whose output changes shape.

One planted notebook, one kernel: each cell's stored output against what its code prints now.
"""
import re
import subprocess
import sys

import nbformat
import pytest

from helpers.core import config
from helpers.tools import nbval_shape

CFG = config.REPO_ROOT / "tests" / "nbval_sanitize.cfg"

TABLE = """| criterion   |   params |   val acc (%) |   drop (points) |
|:------------|---------:|--------------:|----------------:|
| lrp         |   14,885 |{lrp:>14} |{d1:>16} |
| weight      |   14,885 |{weight:>14} |{d2:>16} |
"""
STORED = TABLE.format(lrp="49.00", weight="9.75", d1="-0.25", d2="+39.00")
OTHER_CPU = TABLE.format(lrp="85.25", weight="84.50", d1="+1.75", d2="+2.50")
FINDINGS = """- Unstructured, the highest sparsity within 1 point: {order}.
- {first} goes furthest; LRP is {verdict}.

**Next:** [`04_structured_pruning`](04_structured_pruning.ipynb) removes whole filters."""

# name -> (code that prints today's output, stored output, tagged nbval-shape, should pass)
CASES = {
    "another CPU's trajectory": (OTHER_CPU, STORED, False, True),
    "a renamed column": (OTHER_CPU.replace("val acc", "valid acc"), STORED, False, False),
    "a criterion missing": ("\n".join(OTHER_CPU.splitlines()[:3]) + "\n", STORED, False, False),
    "a changed whole number": (OTHER_CPU.replace("| weight      |   14,885", "| weight      |   14,886"), STORED,
                               False, False),
    "a cell that raises": (None, STORED, False, False),
    "shape: other counts, order and verdicts": (
        FINDINGS.format(order="weight 35%, lrp 5%", first="weight", verdict="behind weight"),
        FINDINGS.format(order="lrp 50%, weight 30%", first="lrp", verdict="ahead"), True, True),
    "shape: a finding missing": (
        FINDINGS.format(order="weight 35%, lrp 5%", first="weight", verdict="behind").split("\n", 1)[1],
        FINDINGS.format(order="lrp 50%, weight 30%", first="lrp", verdict="ahead"), True, False),
    "shape: a table row missing": ("\n".join(OTHER_CPU.splitlines()[:3]) + "\n", STORED, True, False),
}


def _cell(printed: str | None, stored: str, shape: bool):
    source = f"print({printed!r}, end='')" if printed is not None else "raise RuntimeError('planted')"
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored)]
    cell.execution_count = 1
    if shape:
        cell.metadata["tags"] = [nbval_shape.TAG]
    return cell


@pytest.mark.slow
def test_trajectory_noise_passes_a_changed_shape_fails(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [_cell(printed, stored, shape) for printed, stored, shape, _ in CASES.values()]
    nbformat.write(nb, tmp_path / "planted.ipynb")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "helpers.tools.nbval_shape",
                          "-rA",
                          str(tmp_path / "planted.ipynb"), "--nbval", "--nbval-current-env",
                          "--nbval-sanitize-with", str(CFG)], capture_output=True, text=True, cwd=tmp_path)
    assert OTHER_CPU != STORED and all(printed != stored for printed, stored, *_ in CASES.values())
    for i, (name, (*_, passes)) in enumerate(CASES.items()):
        verdict = "PASSED" if passes else "FAILED"
        assert re.search(rf"{verdict} \S*::Cell {i}\b", run.stdout), (name, run.stdout[-3000:])
    assert "Cell 1: Cell outputs differ" in run.stdout  # a failure names its cell


def test_shape_masks_what_the_trajectory_chooses_and_keeps_the_words():
    a = nbval_shape.shape("- compute route: lrp's # fewer parameters; target met.\n| taylor | 14,885 |")
    b = nbval_shape.shape("- compute route: weight's # fewer parameters; target missed.\n| lrp | 9,001 |")
    assert a == b == "- compute route…\n| <criterion> | # |"
    assert nbval_shape.shape("- size route: …") != nbval_shape.shape("- combined route: …")
    # a run that did not finish: its dash reads like any value
    assert nbval_shape.shape("| lrp | – | True |") == nbval_shape.shape("| weight | 3 | – |")


def test_shape_masks_the_composite_a_setting_picked():
    from helpers.tools.nbval_shape import shape
    a = "| structured | False | lrp (epsilon_alpha2_beta1) | weight | +1.25 [-3.00, +5.25] tied |"
    b = "| structured | False | lrp (epsilon) | weight | +1.25 [-3.00, +5.25] ahead |"
    assert shape(a) == shape(b)
    assert shape("lrp (searched) | weight") != shape("lrp (searched) | taylor, gradient")
