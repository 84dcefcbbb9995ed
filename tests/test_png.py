"""Our PNG writer: the pixels any reader decodes are the array written."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from cxr_core.writers.png import png_bytes, write_png
from tests.conftest import RG1_UNCR


@pytest.fixture(scope="module")
def analysis():
    from cxr_core import Engine, read_radiograph

    return Engine().analyze(read_radiograph(RG1_UNCR))


def _pillow(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _libpng(path: Path) -> np.ndarray:
    """ITK's PNG reader (libpng), as Slicer reads a mask."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_real_mask_overlay_and_layer_read_back_the_same(analysis, tmp_path) -> None:
    from cxr_core.writers.overlay import render_overlay

    mask = analysis.segments["right_lung"].mask.astype(np.uint8) * 255
    overlay = render_overlay(analysis)
    layer = np.zeros((*overlay.shape[:2], 4), dtype=np.uint8)
    layer[..., :3] = (255, 80, 0)
    layer[..., 3] = overlay[..., 0]
    for name, pixels in {"mask": mask, "overlay": overlay, "layer": layer}.items():
        path = tmp_path / f"{name}.png"
        write_png(pixels, path)
        np.testing.assert_array_equal(_pillow(path.read_bytes()), pixels)
        np.testing.assert_array_equal(_libpng(path), pixels)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (5, 9, 3), (2, 1, 4), (300, 211)])
def test_every_byte_value_and_shape_reads_back(shape, tmp_path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for level in (0, 1, 9):
        np.testing.assert_array_equal(_pillow(png_bytes(pixels, level=level)), pixels)
    write_png(pixels, tmp_path / "x.png")
    np.testing.assert_array_equal(_libpng(tmp_path / "x.png"), pixels)


@pytest.mark.parametrize(("pixels", "message"), [
    (np.zeros((4, 4), dtype=np.float32), "uint8"),
    (np.zeros((4, 4, 2), dtype=np.uint8), "shape"),
    (np.zeros((0, 4), dtype=np.uint8), "shape"),
    (np.zeros(4, dtype=np.uint8), "shape"),
])
def test_refuses_what_it_cannot_write(pixels, message) -> None:
    with pytest.raises(ValueError, match=message):
        png_bytes(pixels)
