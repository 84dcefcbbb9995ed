"""PNG / JPEG / TIFF files -> :class:`Radiograph` (spacing unknown unless given)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxr_core.io.errors import RefusedInput
from cxr_core.radiograph import PixelSpacing, Radiograph

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
MIN_SIDE = 64


def read_image_radiograph(
    path: Path, *, radiograph_id: str | None = None, spacing: PixelSpacing | None = None
) -> Radiograph:
    """Read a grayscale (or RGB, converted) image file as a MONOCHROME2 radiograph."""
    try:
        with Image.open(path) as image:
            image.load()
            pixels = _to_gray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise RefusedInput(f"unreadable image ({type(error).__name__}: {error})") from error
    if min(pixels.shape) < MIN_SIDE:
        raise RefusedInput(f"image {pixels.shape[0]}x{pixels.shape[1]} is too small to analyse")
    if float(pixels.max() - pixels.min()) <= 0:
        raise RefusedInput("blank image: every pixel has the same value")
    return Radiograph(
        pixels=pixels,
        spacing=spacing or PixelSpacing.unknown(),
        id=radiograph_id or path.stem,
    )


def _to_gray(image: Image.Image) -> np.ndarray:
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        return np.asarray(image, dtype=np.float32)
    return np.asarray(image.convert("L"), dtype=np.float32)
