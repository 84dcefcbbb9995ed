"""Uniform borders and corners that are not anatomy: find them, crop frames away, fill
what is left from the edge.

PACS exports, scanners and rotations add frames and corner triangles of one grey value
(black, or white after a MONOCHROME1 inversion). The networks never saw them in training
and read a black frame as "no disease" (a 5 % frame turned 15 of 25 pneumonia calls
negative in the 2026-11-29 probe), whereas the same rotation with its corners filled from
the image's edge changed almost nothing. So before any model runs, a frame is cropped
away (the models see the chest at the scale they were trained on) and corners inside the
crop are filled from the nearest image pixel.

Padding is a region of (nearly) the darkest or brightest value that touches the image
border and is either part of a frame (it holds a whole edge row or column) or a straight-
edged corner piece (almost convex). Clipped air around a patient is also dark and touches
the border, but follows the body's outline, so it is neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

WORK_SIDE = 256
"""Padding is found on a copy of about this many pixels a side (enough for its edges)."""
MIN_FRACTION = 0.002
"""A candidate region smaller than this share of the image is left alone."""
MIN_SOLIDITY = 0.97
"""Region area / convex hull area of a corner piece: rotation corners are triangles."""
TOLERANCE = 0.02
"""How far from the extreme value a padding pixel may be, as a share of the grey range
(lossy compression blurs a black frame by a few grey levels)."""


@dataclass(frozen=True)
class Padding:
    """Where an image is padded, on a grid ``step`` times coarser than the image."""

    mask: np.ndarray
    """Boolean, on the coarse grid."""
    step: int
    extremes: tuple[float, ...] = ()
    """The grey values padding has here (the darkest and/or brightest)."""
    tolerance: float = 0.0

    def full_mask(self, pixels: np.ndarray) -> np.ndarray:
        """The padding at the image's own resolution: coarse cells that are padding,
        less the pixels in them that are not the padding's grey (a frame's edge rarely
        falls on the coarse grid)."""
        rows = np.arange(pixels.shape[0]) // self.step
        columns = np.arange(pixels.shape[1]) // self.step
        full = self.mask[rows[:, None], columns[None, :]]
        near = np.zeros_like(full)
        for extreme in self.extremes:
            near |= np.abs(pixels - extreme) <= self.tolerance
        return np.asarray(full & near)

    @property
    def fraction(self) -> float:
        return float(self.mask.mean())

    def __bool__(self) -> bool:
        return bool(self.mask.any())

    def content_box(self, pixels: np.ndarray) -> tuple[slice, slice]:
        """The rows and columns of ``pixels`` that hold image, not frame (the whole image
        when no whole row or column is padding), to the pixel: the coarse grid only
        brackets each edge, full-resolution lines decide it, so a frame is cut where it
        ends whatever its width."""
        content = ~self.mask
        coarse_rows = np.nonzero(content.any(axis=1))[0]
        coarse_columns = np.nonzero(content.any(axis=0))[0]
        if coarse_rows.size == 0 or coarse_columns.size == 0:
            return slice(0, pixels.shape[0]), slice(0, pixels.shape[1])
        rows = self._span(lambda r: pixels[r], coarse_rows, pixels.shape[0])
        columns = self._span(lambda c: pixels[rows, c], coarse_columns, pixels.shape[1])
        return rows, columns

    def _span(self, line: Callable[[int], np.ndarray], coarse: np.ndarray,
              size: int) -> slice:
        """From the first to the last full-resolution line that is not padding, looking
        only within the coarse cells next to the first and last coarse image lines."""
        def flat(index: int) -> bool:
            values = line(index)
            return any(bool(np.all(np.abs(values - e) <= self.tolerance))
                       for e in self.extremes)

        first, last = int(coarse[0]) * self.step, int(coarse[-1]) * self.step
        start = next((r for r in range(max(first - self.step + 1, 0), first + 1)
                      if not flat(r)), first)
        stop = next((r for r in range(min(last + self.step - 1, size - 1), last - 1, -1)
                     if not flat(r)), last)
        return slice(start, stop + 1)


def find_padding(pixels: np.ndarray) -> Padding:
    """The frame and corner regions of ``pixels`` (an empty mask when there are none)."""
    step = max(1, int(np.ceil(max(pixels.shape) / WORK_SIDE)))
    small = np.asarray(pixels[::step, ::step], dtype=np.float32)
    low, high = float(small.min()), float(small.max())
    found = np.zeros(small.shape, dtype=bool)
    if high <= low:
        return Padding(found, step)
    tolerance = TOLERANCE * (high - low)
    extremes = []
    for extreme in (low, high):
        regions = _padding_regions(np.abs(small - extreme) <= tolerance)
        if regions.any():
            extremes.append(extreme)
            found |= regions
    return Padding(found, step, tuple(extremes), tolerance)


def _padding_regions(candidates: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(candidates)
    if count == 0:
        return np.zeros(candidates.shape, dtype=bool)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    on_border = np.unique(border[border > 0])
    sizes = ndimage.sum_labels(candidates, labels, index=on_border)
    boxes = ndimage.find_objects(labels)
    kept = np.zeros(count + 1, dtype=bool)
    for label, size in zip(on_border, sizes, strict=True):
        if size < MIN_FRACTION * candidates.size:
            continue
        box = boxes[label - 1]
        region = labels[box] == label
        kept[label] = (_is_frame_piece(region, box, candidates.shape)
                       or _solidity(region) >= MIN_SOLIDITY)
    return np.asarray(kept[labels])


def _is_frame_piece(region: np.ndarray, box: tuple[slice, slice],
                    shape: tuple[int, ...]) -> bool:
    """A whole first/last row or column belongs to the region: no anatomy is that flat."""
    rows, columns = box
    full_width = columns.start == 0 and columns.stop == shape[1]
    full_height = rows.start == 0 and rows.stop == shape[0]
    return bool((full_width and ((rows.start == 0 and region[0].all())
                                 or (rows.stop == shape[0] and region[-1].all())))
                or (full_height and ((columns.start == 0 and region[:, 0].all())
                                     or (columns.stop == shape[1] and region[:, -1].all()))))


def _solidity(region: np.ndarray) -> float:
    """Area / convex hull area: 1 (or just above) for a convex shape such as a rotation's
    corner; the hull runs through pixel centres, so a coarse staircase edge costs
    nothing."""
    # scipy.spatial (with scipy.linalg) costs every command ~0.05 s to import; few images
    # have a padding candidate to measure
    from scipy.spatial import ConvexHull, QhullError

    edge = region & ~ndimage.binary_erosion(region)
    points = np.stack(np.nonzero(edge), axis=1)
    try:
        hull = ConvexHull(points)
    except QhullError:  # all on one line
        return 0.0
    return float(region.sum() / hull.volume) if hull.volume > 0 else 0.0


def fill_padding(pixels: np.ndarray, padding: Padding) -> np.ndarray:
    """A copy of ``pixels`` whose padding takes the value of the nearest image pixel."""
    if not padding:
        return pixels
    step = padding.step
    _, nearest = ndimage.distance_transform_edt(padding.mask, return_indices=True)
    target_rows, target_columns = np.nonzero(padding.full_mask(pixels))
    coarse_rows, coarse_columns = target_rows // step, target_columns // step
    source_rows = np.minimum(nearest[0][coarse_rows, coarse_columns] * step,
                             pixels.shape[0] - 1)
    source_columns = np.minimum(nearest[1][coarse_rows, coarse_columns] * step,
                                pixels.shape[1] - 1)
    filled = pixels.copy()
    filled[target_rows, target_columns] = pixels[source_rows, source_columns]
    return filled


def condition(pixels: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice] | None]:
    """The image as the models see it: frame cropped away, corners filled; and the crop
    box on the received image (None when nothing was padding). The engine and every
    training loader use this, so models train on what they are given."""
    padding = find_padding(pixels)
    if not padding:
        return pixels, None
    box = padding.content_box(pixels)
    cropped = np.ascontiguousarray(pixels[box])
    # corners inside the crop: found again on it (the crop need not fall on the grid)
    return fill_padding(cropped, find_padding(cropped)), box


def paste(array: np.ndarray, box: tuple[slice, slice] | None,
          shape: tuple[int, ...]) -> np.ndarray:
    """An array computed on a :func:`condition` crop, back on the received image's grid
    (zeros outside the crop; unchanged when there was no crop)."""
    if box is None:
        return array
    full = np.zeros(shape[:2], dtype=array.dtype)
    full[box] = array
    return full
