"""Who made an object: the producer identity every SlicerCXR result carries, and how to
recognise one (so a node never analyses its own output)."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pydicom

MANUFACTURER = "SlicerCXR"
SEG_SERIES_NUMBER = 901
SR_SERIES_NUMBER = 902
OVERLAY_SERIES_NUMBER = 903
HEATMAP_SEG_SERIES_NUMBER = 904


PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@cache
def software_version() -> str:
    """The package version, from one source: ``pyproject.toml`` (through the installed
    package's metadata, or the file itself beside a source folder, as in Slicer)."""
    try:
        return version("slicercxr")
    except PackageNotFoundError:
        pass
    try:
        return str(tomllib.loads(PYPROJECT.read_text())["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"


def is_own_output(header: pydicom.Dataset) -> bool:
    """True for a SEG, SR or overlay that SlicerCXR wrote."""
    return str(header.get("Manufacturer", "") or "").strip() == MANUFACTURER
