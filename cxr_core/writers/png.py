"""PNG files from uint8 arrays, written directly (signature, IHDR, one IDAT, IEND).

Pillow chooses a filter for every row by trying all five, which made its encoder the
slowest part of writing a 2k mask (12.6 ms of it) or the overlay (61 ms). Here every row
uses the Sub filter (each byte minus the same channel's byte to its left): masks become
runs of zeros, and the overlay's gray radiograph compresses as well as with Pillow's
choice (1.10 against 1.07 MB on RG1_UNCR) in half the time. Any PNG reader decodes the
same pixels (tests read them back with Pillow and with ITK's libpng).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

COLOR_TYPES = {1: 0, 3: 2, 4: 6}
"""PNG colour type by channel count: gray, RGB, RGBA (8 bits per sample)."""
SIGNATURE = b"\x89PNG\r\n\x1a\n"
SUB_FILTER = 1
COMPRESS_LEVEL = 1
"""zlib level of our PNGs: the pixels are the same at any level; level 1 writes a 2k mask
or the overlay several times faster than the default 6, for files ~1.3x larger."""


def png_bytes(pixels: np.ndarray, *, level: int = COMPRESS_LEVEL) -> bytes:
    """``pixels`` as a PNG: uint8, ``(rows, columns)`` gray or ``(rows, columns, 3|4)``
    RGB(A); ``level`` is zlib's compression level."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels: expected uint8, got {pixels.dtype}")
    channels = 1 if pixels.ndim == 2 else (pixels.shape[2] if pixels.ndim == 3 else 0)
    if channels not in COLOR_TYPES or min(pixels.shape[:2], default=0) < 1:
        raise ValueError(f"pixels: expected (rows, columns) or (rows, columns, 3 or 4) with "
                         f"at least one pixel, got shape {pixels.shape}")
    rows, columns = pixels.shape[:2]
    samples = np.ascontiguousarray(pixels).reshape(rows, columns * channels)
    filtered = np.empty((rows, columns * channels + 1), dtype=np.uint8)
    filtered[:, 0] = SUB_FILTER
    filtered[:, 1:channels + 1] = samples[:, :channels]
    # uint8 arithmetic wraps modulo 256, as the filter is defined
    np.subtract(samples[:, channels:], samples[:, :-channels], out=filtered[:, channels + 1:])
    header = struct.pack(">IIBBBBB", columns, rows, 8, COLOR_TYPES[channels], 0, 0, 0)
    return b"".join([SIGNATURE, _chunk(b"IHDR", header),
                     _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level)),
                     _chunk(b"IEND", b"")])


def write_png(pixels: np.ndarray, path: Path, *, level: int = COMPRESS_LEVEL) -> None:
    """Write :func:`png_bytes` of ``pixels`` to ``path``."""
    Path(path).write_bytes(png_bytes(pixels, level=level))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
