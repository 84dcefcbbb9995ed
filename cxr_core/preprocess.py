"""The one image -> network input transform, shared by training and inference."""

from __future__ import annotations

import weakref
from typing import Final

import numpy as np
import torch
import torch.nn.functional as F

PERCENTILES = (0.5, 99.5)
PERCENTILE: Final = "percentile"
EQUALIZE: Final = "equalize"
METHODS = (PERCENTILE, EQUALIZE)


class ToModelInput:
    """Scale a radiograph to 0..1 and resize it to the model's grid.

    Parameters
    ----------
    size:
        ``(rows, columns)`` of the network input; the image is resized without padding
        (masks are resized back the same way, so no geometry is lost).
    percentiles:
        The low and high percentiles mapped to 0 and 1 (a card's ``normalization``).
    method:
        ``percentile`` (linear between the percentiles) or ``equalize``: after the
        percentile scaling and the resize, each value becomes its rank among the image's
        values (mid-rank for ties, 0..1). A rank does not change under any increasing
        intensity map, so a 15-bit CR, an 8-bit PNG of it and a re-windowed or
        gamma-changed JPEG of it reach the network alike (the source's encoding is not a
        feature the network can learn).
    """

    def __init__(self, size: tuple[int, int],
                 percentiles: tuple[float, float] = PERCENTILES,
                 method: str = PERCENTILE) -> None:
        if not 0 <= percentiles[0] < percentiles[1] <= 100:
            raise ValueError(f"percentiles: expected 0 <= low < high <= 100, got {percentiles}")
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        self.size = size
        self.percentiles = percentiles
        self.method = method

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        """Return a ``(1, 1, rows, columns)`` float32 tensor.

        A read-only ``pixels`` array (the engine analyses one) is scaled once and each
        size resized once, for every model that reads it (:func:`_scaled_image`).
        """
        scaled, resized = _scaled_image(pixels, self.percentiles)
        tensor = resized.get(self.size)
        if tensor is None:
            tensor = F.interpolate(scaled, size=self.size, mode="bilinear", antialias=True,
                                   align_corners=False)
            resized[self.size] = tensor
        return equalize(tensor) if self.method == EQUALIZE else tensor.clone()


_Entry = tuple["weakref.ReferenceType[np.ndarray]", tuple[float, float], torch.Tensor,
               dict[tuple[int, int], torch.Tensor]]
_last_image: list[_Entry] = []
"""The last read-only image scaled: what it was, its percentiles, the scaled full-size
tensor and its resized versions by size (one entry, replaced whole)."""


def _scaled_image(pixels: np.ndarray, percentiles: tuple[float, float]
                  ) -> tuple[torch.Tensor, dict[tuple[int, int], torch.Tensor]]:
    """``pixels`` scaled to 0..1 between its ``percentiles``, ``(1, 1, rows, columns)``,
    and the resized versions made of it so far.

    The gate, lungs, findings and pneumothorax models all scale the same image between the
    same percentiles: on a 2k image that is four full-size passes. A read-only array
    cannot change under us, so the last one is remembered (while it is alive) and its
    scaled tensor and resized inputs shared; a writable one is scaled each time.
    """
    entries = list(_last_image)  # a snapshot: another thread may replace the entry
    if entries and entries[0][0]() is pixels and entries[0][1] == percentiles:
        return entries[0][2], entries[0][3]
    step = max(1, min(pixels.shape) // 512)  # percentiles on a subsample: same result, faster
    low, high = np.percentile(pixels[::step, ::step], percentiles)
    scale = float(high - low) or 1.0
    tensor = torch.from_numpy(np.array(pixels, dtype=np.float32))[None, None]
    tensor = tensor.sub_(float(low)).div_(scale).clamp_(0.0, 1.0)  # in place: same values
    resized: dict[tuple[int, int], torch.Tensor] = {}
    if not pixels.flags.writeable:
        _last_image[:] = [(weakref.ref(pixels), percentiles, tensor, resized)]
    return tensor, resized


def forget_scaled_image() -> None:
    """Drop the remembered scaled image (the engine calls it when an analysis is done:
    its full-size float copy is not needed to write the outputs)."""
    _last_image.clear()


def read_only(pixels: np.ndarray) -> np.ndarray:
    """A read-only view of ``pixels`` (the array itself stays writable): models that read
    it share its scaled input (:class:`ToModelInput`)."""
    view = pixels.view()
    view.flags.writeable = False
    return view


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Each ``(N, C, h, w)`` image's values replaced by their mid-rank in that image, 0..1.

    Values are rounded to 1/4096 first, so near-equal values (a black border after a
    resize) tie instead of being ordered by noise. The ranks are counted on those 4097
    levels (a histogram, not a sort: 50x faster at 256x256, the same ranks); values
    outside 0..1 are ranked by sorting.
    """
    flat = (images.reshape(images.shape[0] * images.shape[1], -1) * _LEVELS).round().contiguous()
    if flat.numel() and float(flat.min()) >= 0 and float(flat.max()) <= _LEVELS:
        first, past = _counted_ranks(flat.long())
    else:
        ordered = flat.sort(dim=1).values
        first = torch.searchsorted(ordered, flat, right=False)
        past = torch.searchsorted(ordered, flat, right=True)
    mid_rank = (first + past - 1).float() / (2.0 * max(flat.shape[1] - 1, 1))
    return mid_rank.reshape(images.shape)


_LEVELS = 4096
"""Equalization rounds values to 1/4096 before ranking them."""


def _counted_ranks(levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``(rows, n)`` integer levels in 0..4096: per value, how many values of its row
    are smaller, and how many are smaller or equal (what ``searchsorted`` left and right
    give on the sorted row)."""
    bins = _LEVELS + 1
    offsets = torch.arange(levels.shape[0], dtype=torch.int64)[:, None] * bins
    counts = torch.bincount((levels + offsets).flatten(),
                            minlength=levels.shape[0] * bins).reshape(-1, bins)
    past = counts.cumsum(dim=1)
    return (past - counts).gather(1, levels), past.gather(1, levels)


def resize_probabilities(probabilities: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, h, w)`` probabilities to the source ``shape``."""
    return F.interpolate(probabilities, size=shape, mode="bilinear", align_corners=False)
