"""The one set of size limits every reader applies, whatever the file format.

A chest radiograph the models can read has at least 128 px per side (they run at
224-256 px; below 128 the lungs are a few dozen pixels wide) and at most 8192 px per side
(the largest detector plates are about 43 cm at 0.05 mm, ~8600 px before any binning;
a larger image is a mosaic, a scan artefact or a decompression bomb, and would cost
gigabytes of memory to analyse).
"""

from __future__ import annotations

import zlib

from pydicom import Dataset
from pydicom.encaps import generate_frames

from cxr_core.io.errors import RefusedInput

MIN_SIDE = 128
"""Smallest accepted rows or columns, in pixels."""
MAX_SIDE = 8192
"""Largest accepted rows or columns, in pixels."""


def check_size(rows: int, columns: int) -> None:
    """Refuse an image whose sides fall outside ``MIN_SIDE..MAX_SIDE``.

    Call it with the size a header declares, before decoding any pixels.

    Raises
    ------
    RefusedInput
        With the size and the accepted range.
    """
    if min(rows, columns) < MIN_SIDE:
        problem = "too small"
    elif max(rows, columns) > MAX_SIDE:
        problem = "too large"
    else:
        return
    raise RefusedInput(f"image {rows}x{columns} px is {problem} to analyse; expected "
                       f"{MIN_SIDE}..{MAX_SIDE} px per side")


# --- memory: what decoding an input would cost, known before decoding it -------------

MAX_DECODED_BYTES = 256 * 2**20
"""Default budget for one input's decoded pixel data (an 8192² image of 16 bits is
128 MiB; two samples of 32 bits at that size are not a radiograph)."""
MAX_INFLATED_BYTES = 256 * 2**20
"""Default budget for the inflated size of a deflated dataset."""
_JPEG_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC),
                       *range(0xCD, 0xD0), 0xF7})
"""JPEG start-of-frame markers (baseline .. lossless, arithmetic, and JPEG-LS SOF55)."""
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def check_decoded_size(rows: int, columns: int, samples: int, bits_allocated: int,
                       frames: int = 1, *, max_bytes: int = MAX_DECODED_BYTES) -> None:
    """Refuse pixel data whose declared decoded size exceeds ``max_bytes``.

    Raises
    ------
    RefusedInput
        ``decoded pixel data too large`` with the size in MiB (no header text).
    """
    values = [rows, columns, samples, bits_allocated, frames]
    if any(v < 0 for v in values):
        raise RefusedInput("pixel data attributes are negative")
    size = rows * columns * max(samples, 1) * max(frames, 1) * -(-max(bits_allocated, 1) // 8)
    if size > max_bytes:
        raise RefusedInput(f"decoded pixel data too large ({size / 2**20:.0f} MiB; "
                           f"limit {max_bytes / 2**20:.0f} MiB)")


def codestream_size(frame: bytes) -> tuple[int, int] | None:
    """``(rows, columns)`` a JPEG / JPEG-LS (SOF) or JPEG 2000 (SIZ) codestream declares.

    Only the marker segments before the first scan are read. None when ``frame`` is none
    of these (RLE, or bytes too short to say).
    """
    if frame[:4] == b"\xff\x4f\xff\x51" and len(frame) >= 24:  # J2K SOC, SIZ
        xsiz, ysiz, xosiz, yosiz = (int.from_bytes(frame[i:i + 4], "big")
                                    for i in (8, 12, 16, 20))
        return max(ysiz - yosiz, 0), max(xsiz - xosiz, 0)
    if frame[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(frame):
        if frame[position] != 0xFF:
            return None
        marker = frame[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        length = int.from_bytes(frame[position + 2:position + 4], "big")
        if marker in _JPEG_SOF and position + 9 <= len(frame):
            return (int.from_bytes(frame[position + 5:position + 7], "big"),
                    int.from_bytes(frame[position + 7:position + 9], "big"))
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            return None
        position += 2 + length
    return None


def check_codestream_size(frame: bytes, rows: int, columns: int) -> None:
    """Refuse a codestream whose own dimensions differ from the header's Rows/Columns
    (a 1024² header over a 60000² JPEG frame made a decoder allocate gigabytes).

    Raises
    ------
    RefusedInput
        ``codestream size differs from Rows/Columns`` with both sizes.
    """
    size = codestream_size(frame)
    if size is not None and size != (rows, columns):
        raise RefusedInput(f"codestream is {size[0]}x{size[1]} px but Rows/Columns say "
                           f"{rows}x{columns}")


def check_inflated_size(deflated: bytes, *, max_bytes: int = MAX_INFLATED_BYTES) -> None:
    """Refuse a raw-deflate stream (Deflated Explicit VR Little Endian) that inflates to
    more than ``max_bytes``; inflates in bounded chunks, never holding more than 1 MiB.

    Raises
    ------
    RefusedInput
        ``deflated dataset too large`` or ``deflated dataset is not valid deflate``.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    pending = deflated
    try:
        while pending:
            total += len(inflater.decompress(pending, 2**20))
            pending = inflater.unconsumed_tail
            if total > max_bytes:
                raise RefusedInput(f"deflated dataset too large (inflates past "
                                   f"{max_bytes / 2**20:.0f} MiB)")
        total += len(inflater.flush())
    except zlib.error as error:
        raise RefusedInput("deflated dataset is not valid deflate") from error
    if total > max_bytes:
        raise RefusedInput(f"deflated dataset too large (inflates past "
                           f"{max_bytes / 2**20:.0f} MiB)")


def check_dicom_decode_limits(dataset: Dataset, *, max_bytes: int = MAX_DECODED_BYTES) -> None:
    """Before any pixel is decoded: the declared decoded size (Rows x Columns x samples x
    bits x frames) fits ``max_bytes``, and each compressed frame's own SOF / SIZ size is
    the header's Rows x Columns. A dataset without pixel data passes.

    Raises
    ------
    RefusedInput
        With a reason that quotes sizes only, never header text.
    """
    if "PixelData" not in dataset:
        return
    try:
        rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
        bits = int(dataset.get("BitsAllocated", 8) or 8)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as error:
        raise RefusedInput("pixel data attributes are not integers") from error
    check_decoded_size(rows, columns, samples, bits, frames, max_bytes=max_bytes)
    element = dataset["PixelData"]
    if not element.is_undefined_length:
        return
    try:
        encapsulated = generate_frames(element.value, number_of_frames=frames)
        for index, frame in enumerate(encapsulated):
            if index >= frames:
                break
            check_codestream_size(frame, rows, columns)
    except RefusedInput:
        raise
    except Exception as error:  # fragments that do not parse: the decoder would fail too
        raise RefusedInput(f"compressed pixel data is malformed ({type(error).__name__})"
                           ) from error
