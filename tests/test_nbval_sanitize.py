"""nbval stays robust to another CPU's float noise yet still catches a changed count."""
import math
import subprocess
import sys

import nbformat
import pytest

from helpers import config

CFG = config.REPO_ROOT / "tests" / "nbval_sanitize.cfg"


def _boundary() -> tuple[float, float]:
    """Two adjacent floats (one ulp apart) that print differently with 6 decimals."""
    v = 0.1234565
    while f"{v:.6f}" == f"{math.nextafter(v, 1):.6f}":
        v = math.nextafter(v, 1)
    return v, math.nextafter(v, 1)


def _nbval(tmp_path, stored: str, source: str, sanitize: bool) -> int:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored)]
    cell.execution_count = 1
    nb.cells = [cell]
    path = tmp_path / "check.ipynb"
    nbformat.write(nb, path)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path), "--nbval",
                           "--nbval-current-env", *(["--nbval-sanitize-with", str(CFG)] if sanitize else [])],
                          capture_output=True, text=True, cwd=tmp_path).returncode


@pytest.mark.parametrize("sanitize, count, expected", [(True, 12, 0), (True, 13, 1), (False, 12, 1)])
def test_one_ulp_passes_a_changed_count_fails(tmp_path, sanitize, count, expected):
    before, after = _boundary()
    stored = f"accuracy {before:.6f}\nfilters kept 12\n"
    source = f"print('accuracy ' + format({after!r}, '.6f'))\nprint('filters kept {count}')"
    assert f"{before:.6f}" != f"{after:.6f}"  # the raw outputs do differ
    assert _nbval(tmp_path, stored, source, sanitize) == expected
