"""The one image -> network input transform, shared by training and inference."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PERCENTILES = (0.5, 99.5)


class ToModelInput:
    """Scale a radiograph to 0..1 by robust percentiles and resize it to the model's grid.

    Parameters
    ----------
    size:
        ``(rows, columns)`` of the network input; the image is resized without padding
        (masks are resized back the same way, so no geometry is lost).
    percentiles:
        The low and high percentiles mapped to 0 and 1 (a card's ``normalization``).
    """

    def __init__(self, size: tuple[int, int],
                 percentiles: tuple[float, float] = PERCENTILES) -> None:
        if not 0 <= percentiles[0] < percentiles[1] <= 100:
            raise ValueError(f"percentiles: expected 0 <= low < high <= 100, got {percentiles}")
        self.size = size
        self.percentiles = percentiles

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        """Return a ``(1, 1, rows, columns)`` float32 tensor."""
        step = max(1, min(pixels.shape) // 512)  # percentiles on a subsample: same result, faster
        low, high = np.percentile(pixels[::step, ::step], self.percentiles)
        scale = float(high - low) or 1.0
        tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
        tensor = ((tensor - float(low)) / scale).clamp_(0.0, 1.0)
        return F.interpolate(tensor, size=self.size, mode="bilinear", antialias=True,
                             align_corners=False)


def resize_probabilities(probabilities: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, h, w)`` probabilities to the source ``shape``."""
    return F.interpolate(probabilities, size=shape, mode="bilinear", align_corners=False)
