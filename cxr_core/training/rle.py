"""SIIM-ACR run-length encoding of pneumothorax masks.

The SIIM-ACR table (``ImageId, EncodedPixels``) uses *relative* RLE on the 1024×1024
image: pairs ``offset length`` where each offset counts from the end of the previous run
(from pixel 0 for the first), over the pixels in **column-major** order (down the first
column, then the next). ``-1`` means no pneumothorax; an image with several rows has the
union of their masks.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SIIM_SHAPE = (1024, 1024)
EMPTY = "-1"


def rle_decode(encoded: str, shape: tuple[int, int] = SIIM_SHAPE) -> np.ndarray:
    """Decode one SIIM relative RLE string into a boolean ``(rows, columns)`` mask.

    Parameters
    ----------
    encoded:
        ``"offset length offset length ..."``; ``"-1"`` or blank gives an empty mask.
    shape:
        ``(rows, columns)`` of the image the RLE was written for.

    Raises
    ------
    ValueError
        If ``encoded`` has an odd number of values, a negative value, or runs past the
        end of the image.
    """
    rows, columns = shape
    flat = np.zeros(rows * columns, dtype=bool)
    values = encoded.split()
    if not values or values == [EMPTY]:
        return flat.reshape(columns, rows).T
    try:
        numbers = np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        raise ValueError(f"encoded: not integers: {encoded[:60]!r}") from None
    if numbers.size % 2 or (numbers < 0).any():
        raise ValueError(f"encoded: expected non-negative 'offset length' pairs, got "
                         f"{numbers.size} values")
    offsets, lengths = numbers[0::2], numbers[1::2]
    # each offset counts from the end of the previous run
    starts = np.cumsum(offsets + np.concatenate(([0], lengths[:-1])))
    if starts.size and starts[-1] + lengths[-1] > flat.size:
        raise ValueError(f"encoded: runs end at pixel {starts[-1] + lengths[-1]}, past the "
                         f"{rows}x{columns} image")
    for start, length in zip(starts, lengths, strict=True):
        flat[start:start + length] = True
    # column-major: the flat order walks down columns, so fill (columns, rows) and transpose
    return flat.reshape(columns, rows).T


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2D boolean mask as SIIM relative RLE (``"-1"`` when empty)."""
    if mask.ndim != 2:
        raise ValueError(f"mask: expected a 2D array, got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).T.ravel()
    padded = np.concatenate(([False], flat, [False])).astype(np.int8)
    changes = np.nonzero(np.diff(padded))[0]
    if changes.size == 0:
        return EMPTY
    starts, ends = changes[0::2], changes[1::2]
    previous_ends = np.concatenate(([0], ends[:-1]))
    pairs = np.stack([starts - previous_ends, ends - starts], axis=1).ravel()
    return " ".join(str(int(v)) for v in pairs)


def read_rle_table(path: Path) -> dict[str, list[str]]:
    """``ImageId -> [EncodedPixels, ...]`` from a SIIM CSV (plain or ``.gz``).

    The official file names its second column ``" EncodedPixels"`` (leading space);
    both spellings are accepted.
    """
    rows: dict[str, list[str]] = {}
    for image_id, encoded in _rows(Path(path)):
        rows.setdefault(image_id, []).append(encoded)
    return rows


def decode_union(encodings: list[str], shape: tuple[int, int] = SIIM_SHAPE) -> np.ndarray:
    """The union of several RLE rows of one image."""
    mask = np.zeros(shape, dtype=bool)
    for encoded in encodings:
        mask |= rle_decode(encoded, shape)
    return mask


def _rows(path: Path) -> Iterator[tuple[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        reader = csv.DictReader(text)
        fields = {name.strip(): name for name in reader.fieldnames or []}
        if "ImageId" not in fields or "EncodedPixels" not in fields:
            raise ValueError(f"path: {path} has no ImageId/EncodedPixels columns "
                             f"(found {reader.fieldnames})")
        for row in reader:
            yield row[fields["ImageId"]].strip(), row[fields["EncodedPixels"]].strip()
