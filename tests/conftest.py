"""Shared fixtures: the real shared data, the shipped models, and DICOM tool checks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DICOM_SAMPLES = SHARED_DATA / "dicom_samples"
RG1_UNCR = DICOM_SAMPLES / "RG1_UNCR.dcm"


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # an install step is missing: fail loudly, never skip
        pytest.fail(f"{name} is not installed; run scripts/install.sh --test")
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for a file (it always exits 0)."""
    result = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True,
                            text=True, check=False)
    return [line for line in (result.stdout + result.stderr).splitlines()
            if line.startswith("Error")]


def dsrdump(path: Path) -> str:
    result = subprocess.run([require_tool("dsrdump"), "+Pl", str(path)], capture_output=True,
                            text=True, check=True)
    return result.stdout


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA} (../shared beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def engine():
    from cxr_core import Engine

    return Engine()
