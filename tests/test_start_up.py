"""What ``cxr analyze`` on one file leaves out of its start-up: highdicom's full module
table, SciPy's spatial package (no padding to measure), collector scans of what start-up
loaded; and that it still collects what was garbage before it started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import RG1_UNCR

CHILD = """
import gc, sys, weakref

class Cycle:
    pass

garbage = Cycle()
garbage.me = garbage  # cyclic garbage from before the command: collected, not frozen
alive = weakref.ref(garbage)
del garbage

from cxr_core.cli import main

assert main(["analyze", sys.argv[1], "--out", sys.argv[2]]) == 0
frozen = gc.get_freeze_count()
assert main(["analyze", sys.argv[2] + "/none", "--out", sys.argv[2]]) == 2  # nothing found
from cxr_core.writers.module_table import highdicom_loader

print(highdicom_loader().cache_info().currsize, "scipy.spatial" in sys.modules,
      frozen > 100_000, gc.get_freeze_count() == frozen, alive() is None, gc.isenabled())
"""


def test_one_file_start_up_leaves_out_what_it_does_not_need(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", CHILD, str(RG1_UNCR), str(tmp_path)],
                            capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    # full table never read; no hull measured; start-up frozen once; old garbage collected
    assert result.stdout.split()[-6:] == ["0", "False", "True", "True", "True", "True"]
    assert (tmp_path / "RG1_UNCR" / "sr.dcm").is_file()
