"""What the mask quality estimate costs, against the lung network pass it rides on.

    python benchmarks/mask_quality_cost.py [RADIOGRAPH]

Both are timed in the same run on the same image (median of repeats); the estimate is
reported in milliseconds and as a ratio of the lung model's forward pass.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_core.io import read_radiograph  # noqa: E402
from cxr_core.mask_quality import mask_agreement  # noqa: E402
from cxr_core.models import default_models_dir  # noqa: E402
from cxr_core.segmentation import Segmenter  # noqa: E402

DEFAULT = REPO.parent / "shared" / "data" / "dicom_samples" / "RG1_UNCR.dcm"


def median_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    pixels = read_radiograph(path).pixels
    segmenter = Segmenter.load(default_models_dir() / "lung_seg")
    probabilities = segmenter.probabilities(pixels)
    network = median_ms(lambda: segmenter.probabilities(pixels), 10)
    estimate = median_ms(lambda: mask_agreement(probabilities), 50)
    print(f"{path.name} {pixels.shape[0]}x{pixels.shape[1]}: lung network pass "
          f"{network:.1f} ms; mask agreement {estimate:.2f} ms "
          f"({estimate / network:.4f}x the network pass)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
