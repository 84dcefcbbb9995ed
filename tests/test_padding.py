"""Frames and rotation corners are found and filled; anatomy and clipped air are not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cxr_core import QualityFlag, read_radiograph
from cxr_core.padding import fill_padding, find_padding
from tests.conftest import DICOM_SAMPLES, RG1_UNCR, SHARED_DATA

NIH_TEST = SHARED_DATA / "nih_cxr14_normal_pneumonia" / "images" / "nih_00000061_015.png"


def _framed(pixels: np.ndarray, fraction: float, value: float = 0.0) -> np.ndarray:
    rows, columns = (round(fraction * s) for s in pixels.shape)
    framed = np.full((pixels.shape[0] + 2 * rows, pixels.shape[1] + 2 * columns), value,
                     dtype=np.float32)
    framed[rows:-rows, columns:-columns] = pixels
    return framed


@pytest.fixture(scope="module")
def chest() -> np.ndarray:
    return read_radiograph(RG1_UNCR).pixels


def test_a_plain_radiograph_has_no_padding(chest: np.ndarray) -> None:
    padding = find_padding(chest)
    assert not padding and padding.fraction == 0
    assert fill_padding(chest, padding) is chest


@pytest.mark.parametrize(("fraction", "value"), [(0.05, 0.0), (0.2, 0.0), (0.05, 1.0)])
def test_a_frame_is_found_and_filled_from_the_edge(chest: np.ndarray, fraction: float,
                                                   value: float) -> None:
    low, high = float(chest.min()), float(chest.max())
    framed = _framed(chest, fraction, low if value == 0.0 else high)
    padding = find_padding(framed)
    added = 1 - chest.size / framed.size
    assert padding.fraction == pytest.approx(added, abs=0.01)
    filled = fill_padding(framed, padding)
    rows, columns = (round(fraction * s) for s in chest.shape)
    inner = filled[rows:-rows, columns:-columns]
    changed = inner != chest
    # only image pixels of (nearly) the frame's own grey, touching it, may change
    assert changed.mean() < 0.002
    assert np.abs(chest[changed] - framed[0, 0]).max(initial=0) <= 0.02 * (high - low)
    # the frame now carries the image's edge, not one grey value
    assert filled[:rows].std() > 0.01 * (high - low)


def test_rotation_corners_are_found(chest: np.ndarray) -> None:
    small = chest[::4, ::4]
    rotated = ndimage.rotate(small, 10, reshape=False, order=1, cval=float(small.min()))
    corners = ndimage.rotate(np.ones_like(small), 10, reshape=False, order=0, cval=0) == 0
    found = find_padding(rotated)
    mask = found.mask[np.arange(small.shape[0])[:, None] // found.step,
                      np.arange(small.shape[1])[None] // found.step]
    assert (mask & corners).sum() / corners.sum() > 0.9
    assert (mask & ~corners).sum() / (~corners).sum() < 0.01


def test_natural_frames_of_real_images_are_found() -> None:
    """An NIH image with its own black collimation frame."""
    assert find_padding(read_radiograph(NIH_TEST).pixels).fraction > 0.01


def test_dicom_samples_without_padding_stay_untouched() -> None:
    for name in ("RG1_UNCR.dcm", "RG1_J2KR.dcm"):
        assert not find_padding(read_radiograph(DICOM_SAMPLES / name).pixels)


def test_the_engine_fills_but_shows_what_it_received(engine) -> None:
    """A black frame changes the answers far less once filled; the outputs show the
    frame as received."""
    plain = read_radiograph(NIH_TEST)
    framed_pixels = _framed(plain.pixels, 0.05, float(plain.pixels.min()))
    framed = read_radiograph(NIH_TEST)
    framed.pixels = framed_pixels
    reference, analysis = engine.analyze(plain), engine.analyze(framed)
    assert QualityFlag.PADDING_FILLED in analysis.quality_flags
    np.testing.assert_array_equal(analysis.radiograph.pixels, framed_pixels)
    pneumonia = [next(f for f in a.findings if f.name == "pneumonia").probability
                 for a in (reference, analysis)]
    assert abs(pneumonia[0] - pneumonia[1]) < 0.1
