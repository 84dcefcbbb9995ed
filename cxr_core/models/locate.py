"""Where the shipped models are, however cxr_core was installed.

1. ``$CXR_MODELS_DIR``, when set (a deployment's own models);
2. ``cxr_core/shipped_models/`` inside an installed wheel (``resources/models`` is
   packaged there, see ``pyproject.toml``);
3. ``resources/models`` beside the ``cxr_core`` folder: a source checkout, an editable
   install, or the Slicer extension, which installs both side by side.
"""

from __future__ import annotations

import os
from pathlib import Path

MODELS_DIR_ENV = "CXR_MODELS_DIR"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def default_models_dir() -> Path:
    """The folder holding one sub-folder per model."""
    configured = os.environ.get(MODELS_DIR_ENV)
    if configured:
        return Path(configured)
    packaged = PACKAGE_ROOT / "shipped_models"
    if packaged.is_dir():
        return packaged
    return PACKAGE_ROOT.parent / "resources" / "models"
