"""Image-content checks that do not trust the header.

:func:`check_polarity` is cheap and weak: the lungs stage acts on it only when the lung
model agrees (:mod:`cxr_core.stages.lungs`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Polarity = Literal["normal", "inverted", "unclear"]

# Fractions of the image height / width. On a frontal chest radiograph the spine and
# mediastinum (central strip) are denser, so brighter in MONOCHROME2, than the lung fields.
_ROWS = (0.25, 0.70)
_CENTRE_COLUMNS = (0.44, 0.56)
_LUNG_COLUMNS = ((0.18, 0.34), (0.66, 0.82))
_MARGIN = 0.04


def inverted(pixels: np.ndarray) -> np.ndarray:
    """The negative of ``pixels`` on the same grey range (float32)."""
    return np.asarray(pixels.max() + pixels.min() - pixels, dtype=np.float32)


def check_polarity(pixels: np.ndarray) -> Polarity:
    """Say whether a frontal chest radiograph looks MONOCHROME2 (``"normal"``) or negative.

    Compares the median brightness of the central (mediastinal) strip with the lung
    fields, on pixels scaled to 0..1 by their 1st/99th percentiles.
    """
    step = max(1, min(pixels.shape) // 256)  # a 256-ish grid says as much, much faster
    sample = pixels[::step, ::step]
    low, high = np.percentile(sample, (1, 99))
    if high <= low:
        return "unclear"
    scaled = np.clip((sample - low) / (high - low), 0, 1)
    rows, columns = scaled.shape
    band = scaled[int(_ROWS[0] * rows) : int(_ROWS[1] * rows)]

    def strip(start: float, stop: float) -> np.ndarray:
        return np.asarray(band[:, int(start * columns) : int(stop * columns)])

    centre = float(np.median(strip(*_CENTRE_COLUMNS)))
    lungs = float(np.median(np.concatenate([strip(*c).ravel() for c in _LUNG_COLUMNS])))
    if centre - lungs > _MARGIN:
        return "normal"
    if lungs - centre > _MARGIN:
        return "inverted"
    return "unclear"
