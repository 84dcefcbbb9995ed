"""What every ``cxr`` sub-command shares: exit codes, default folders, shared flags."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
"""``../shared/data`` beside a source checkout."""
RUNS_DIR = Path("runs")


def run_folder(name: str, *, now: datetime | None = None) -> Path:
    """``runs/<name>-<UTC time>/``: where training writes unless told otherwise, never
    into the shipped models (``cxr models promote`` copies a run there)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return RUNS_DIR / f"{name}-{stamp}"


if TYPE_CHECKING:  # not subscriptable at run time on 3.11
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    """What ``add_subparsers`` returns (argparse has no public name for it)."""
else:
    SubParsers = argparse._SubParsersAction
