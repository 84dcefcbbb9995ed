"""PNG / JPEG / TIFF files -> :class:`Radiograph` (spacing unknown unless given)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxr_core.io.errors import RefusedInput
from cxr_core.io.limits import MAX_SIDE, MIN_SIDE, check_size
from cxr_core.radiograph import PixelSpacing, Radiograph

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})


def read_image_radiograph(
    path: Path, *, radiograph_id: str | None = None, spacing: PixelSpacing | None = None
) -> Radiograph:
    """Read a grayscale (or RGB, converted) image file as a MONOCHROME2 radiograph.

    The size is checked from the file's header before any pixel is decoded, so an
    oversized image is refused without the memory its pixels would take.

    Raises
    ------
    RefusedInput
        When the file is not a readable image, its sides fall outside
        :data:`~cxr_core.io.limits.MIN_SIDE`..:data:`~cxr_core.io.limits.MAX_SIDE`, or
        every pixel has the same value.
    """
    try:
        with _open(path) as image:
            columns, rows = image.size
            check_size(rows, columns)
            image.load()
            pixels = _to_gray(image)
    except RefusedInput:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise RefusedInput(f"unreadable image ({type(error).__name__}: {error})") from error
    if float(pixels.max() - pixels.min()) <= 0:
        raise RefusedInput("blank image: every pixel has the same value")
    return Radiograph(
        pixels=pixels,
        spacing=spacing or PixelSpacing.unknown(),
        id=radiograph_id or path.stem,
    )


def _open(path: Path) -> Image.Image:
    """``Image.open`` (header only), with Pillow's decompression-bomb guard as a refusal.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` (~89 Mpx) and raises above twice that,
    both inside ``open``; our limit (8192² ≈ 67 Mpx) lies below both. The warning is
    silenced (a refusal is one line on stderr; the caller's size check refuses the image
    with its size) and the error becomes a refusal. ``MAX_IMAGE_PIXELS`` is Pillow's
    global, not ours to change in a library that Slicer or the node imports.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError as error:
            raise RefusedInput(f"image is too large to analyse ({_pixel_count(error)}); "
                               f"expected {MIN_SIDE}..{MAX_SIDE} px per side") from error


def _pixel_count(error: Exception) -> str:
    """The pixel count Pillow's message names ("Image size (400000000 pixels) exceeds
    ..."), or its message as is."""
    message = str(error)
    start = message.find("(")
    end = message.find(" pixels)", start)
    if start >= 0 and end > start and message[start + 1:end].isdigit():
        return f"{int(message[start + 1:end]):,} pixels"
    return message


def _to_gray(image: Image.Image) -> np.ndarray:
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        return np.asarray(image, dtype=np.float32)
    return np.asarray(image.convert("L"), dtype=np.float32)
