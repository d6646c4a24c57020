"""nbval stays robust to another CPU's float noise yet still catches a changed count."""
import math
import re
import subprocess
import sys

import nbformat

from helpers import config

CFG = config.REPO_ROOT / "tests" / "nbval_sanitize.cfg"


def _boundary() -> tuple[float, float]:
    """Two adjacent floats (one ulp apart) that print differently with 6 decimals."""
    v = 0.1234565
    while f"{v:.6f}" == f"{math.nextafter(v, 1):.6f}":
        v = math.nextafter(v, 1)
    return v, math.nextafter(v, 1)


def _cell(source: str, stored: str):
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored)]
    cell.execution_count = 1
    return cell


def test_one_ulp_passes_a_changed_count_fails(tmp_path):
    before, after = _boundary()
    assert f"{before:.6f}" != f"{after:.6f}"  # the raw outputs do differ
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [_cell(f"print('accuracy ' + format({after!r}, '.6f'))", f"accuracy {before:.6f}\n"),
                _cell("print('filters kept 13')", "filters kept 12\n")]
    nbformat.write(nb, tmp_path / "check.ipynb")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", str(tmp_path / "check.ipynb"),
                          "--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(CFG)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert re.search(r"PASSED \S*::Cell 0", run.stdout), run.stdout[-2000:]
    assert re.search(r"FAILED \S*::Cell 1", run.stdout) and "1 failed, 1 passed" in run.stdout, run.stdout[-2000:]
