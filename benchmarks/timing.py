"""What every benchmark here shares: a median wall time after warm-up, and where the
shared data is (``../shared/data`` beside the checkout).

Benchmarks run as scripts (``python benchmarks/NAME.py``), so this folder is on
``sys.path`` and they import it as ``from timing import median_time``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DICOM_SAMPLES = SHARED / "dicom_samples"


def median_time(function: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Median seconds of ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)
