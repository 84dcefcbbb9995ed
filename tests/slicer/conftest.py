"""SlicerCXRLib on real MRML (the ``slicer-core`` wheel): a fresh scene per test, the
shipped models, and the shared images."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_DATA

MODULE_DIR = REPO / "SlicerCXR"
GB = SHARED_DATA / "covid_cxr_gb_lr_lungs"
PNG_IMAGE = GB / "images" / "gb_000.png"
SIIM_DICOM = next((SHARED_DATA / "dicom_samples").glob("siim_*.dcm"), None)

# Slicer puts each module's folder on sys.path; do the same for SlicerCXRLib.
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

try:
    import slicer  # noqa: F401  (the slicer-core wheel)
except ImportError:  # an install step is missing: fail loudly, never skip
    pytest.fail("slicer-core is not installed; run scripts/install.sh --test",
                pytrace=False)


@pytest.fixture
def scene():
    import slicer

    scene = slicer.vtkMRMLScene()
    yield scene
    scene.Clear(True)


@pytest.fixture
def logic(scene, engine):
    from SlicerCXRLib.logic import CXRLogic

    return CXRLogic(scene, engine=engine)


def gb_rows(split: str | None = None) -> list[dict[str, str]]:
    """General Blockchain manifest rows (optionally of one split)."""
    with (GB / "manifest.csv").open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if split in (None, row["split"])]


GB_MASK_COLUMNS = {"right_lung": "mask_lung_right", "left_lung": "mask_lung_left",
                   "heart": "mask_heart_mediastinum"}


def gb_truth(stem: str) -> dict:
    """Ground-truth masks of a General Blockchain image by our segment names (only the
    structures the dataset has for it)."""
    from cxr_core.training.data import read_mask

    row = next(r for r in gb_rows() if r["image"] == f"images/{stem}.png")
    return {ours: read_mask(GB / row[column])
            for ours, column in GB_MASK_COLUMNS.items() if row[column]}


def path_of(stem: str) -> Path:
    return GB / "images" / f"{stem}.png"
