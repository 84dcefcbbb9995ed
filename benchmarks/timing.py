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


def median_time(function: Callable[[], object], runs: int, warmup: int = 3,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of ``runs`` calls after ``warmup`` untimed ones, on ``clock`` (wall
    time; ``time.process_time`` for this process's CPU time)."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(runs):
        started = clock()
        function()
        samples.append(clock() - started)
    return statistics.median(samples)


def reference_forward(runs: int, warmup: int = 3,
                      clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of one forward pass of MONAI's DenseNet121 (1 channel in, 18 out,
    as torchxrayvision's) at 224x224, batch 1, on the CPU: the reference every speed
    benchmark divides by, measured in the same run."""
    import torch
    from monai.networks.nets import DenseNet121

    network = _REFERENCE.get("network")
    if network is None:
        torch.manual_seed(0)
        network = _REFERENCE.setdefault(
            "network", DenseNet121(spatial_dims=2, in_channels=1, out_channels=18).eval())
    image = torch.rand(1, 1, 224, 224)
    with torch.inference_mode():
        return median_time(lambda: network(image), runs, warmup, clock)


_REFERENCE: dict[str, object] = {}
