"""Regenerate ``cxr_core/writers/highdicom_modules.json`` from the installed highdicom.

Run after upgrading highdicom (until then the old subset is ignored and highdicom reads
its full table): ``python scripts/make_module_table.py``.
"""

from __future__ import annotations

import highdicom

from cxr_core.writers.module_table import SUBSET_FILE, subset_keys, write_subset

if __name__ == "__main__":
    size = write_subset()
    print(f"{SUBSET_FILE}: {len(subset_keys())} modules of highdicom {highdicom.__version__}, "
          f"{size / 1e6:.2f} MB")
