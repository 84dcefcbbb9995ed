"""SlicerCXRLib on real MRML (the ``slicer-core`` wheel): a fresh scene per test, the
shipped models, and the shared images."""

from __future__ import annotations

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


def gb_truth(stem: str) -> dict:
    """Ground-truth masks of a General Blockchain image by our segment names."""
    from cxr_core.training.data import read_mask

    names = {"right_lung": "lung_right", "left_lung": "lung_left",
             "heart": "heart_mediastinum"}
    return {ours: read_mask(GB / "masks" / f"{stem}_{theirs}.png")
            for ours, theirs in names.items()}


def path_of(stem: str) -> Path:
    return GB / "images" / f"{stem}.png"
