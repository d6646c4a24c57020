"""Memory budget (issue: a laptop with 8 GB must run the series): the heaviest step of the smoke
series and of ``make test`` is notebook 08's architecture arithmetic on torchvision VGG-16
(134,670,244 parameters); it must stay within 4 GiB. It was 10.4 GB."""
import pytest
import subprocess
import sys

GIB = 1 << 30
BUDGET = 4 * GIB

PEAK = """
import resource
from helpers.studies import results
table = results.report_arithmetic()
assert int(table["parameters"].iloc[2]) == 13_810_009, table
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


@pytest.mark.slow
def test_heaviest_smoke_step_stays_within_the_memory_budget():
    out = subprocess.run([sys.executable, "-c", PEAK], check=True, capture_output=True, text=True)
    peak = int(out.stdout.split()[-1])
    print(f"report arithmetic on torchvision VGG-16: peak resident memory {peak / GIB:.2f} GiB "
          f"(budget {BUDGET / GIB:.0f} GiB)")
    assert peak <= BUDGET, f"peak {peak / GIB:.2f} GiB exceeds the {BUDGET / GIB:.0f} GiB budget"
