"""Compare two ``cxr analyze --out`` folders file by file, ignoring what changes per run.

Used to show that a refactoring leaves the outputs as they were:

    .venv/bin/python scripts/compare_outputs.py BEFORE_DIR AFTER_DIR

Ignored: ``timings_s`` in ``analysis.json``, the creation date/time attributes that
highdicom stamps into every SEG/SR/SC, and the random DimensionOrganizationUID. Everything
else (PNG bytes, every other JSON key, every other DICOM element including pixel data and
UIDs) must be identical. Exit 0 when the folders match, 1 otherwise, with one line per
difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pydicom

PER_RUN_JSON_KEYS = ("timings_s",)
# stamped at creation time, or a fresh random UID per run (highdicom's dimension index)
PER_RUN_DICOM_KEYWORDS = frozenset({"ContentDate", "ContentTime", "InstanceCreationDate",
                                    "InstanceCreationTime", "ContributionDateTime",
                                    "DimensionOrganizationUID"})


def _json_without_timings(path: Path) -> object:
    data = json.loads(path.read_text())
    for key in PER_RUN_JSON_KEYS:
        data.pop(key, None)
    return data


def _dicom_without_times(path: Path) -> list[tuple[str, object]]:
    """Every non-sequence element in file order (nested ones included), minus the
    per-run ones."""
    dataset = pydicom.dcmread(path)
    return [(str(element.tag), element.value) for element in dataset.iterall()
            if element.VR != "SQ" and element.keyword not in PER_RUN_DICOM_KEYWORDS]


def differences(before: Path, after: Path) -> list[str]:
    """One line per file that is missing on one side or whose content differs."""
    names = sorted({p.relative_to(before) for p in before.rglob("*") if p.is_file()}
                   | {p.relative_to(after) for p in after.rglob("*") if p.is_file()})
    found = []
    for name in names:
        old, new = before / name, after / name
        if not old.is_file() or not new.is_file():
            found.append(f"{name}: only in {'after' if not old.is_file() else 'before'}")
            continue
        if name.suffix == ".json":
            same = _json_without_timings(old) == _json_without_timings(new)
        elif name.suffix == ".dcm":
            same = _dicom_without_times(old) == _dicom_without_times(new)
        else:
            same = old.read_bytes() == new.read_bytes()
        if not same:
            found.append(f"{name}: differs")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    found = differences(args.before, args.after)
    for line in found:
        print(line)
    print(f"{len(found)} differences")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
