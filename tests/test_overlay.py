"""The overlay a clinician reads: the legend in a panel beside the radiograph, never on
it; the heat map tinting only the hottest part within the lungs; a decision rule that
overrode a probability stated; and the overlay Secondary Capture still valid DICOM."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from cxr_core import (
    Analysis,
    DicomOptions,
    PixelSpacing,
    Radiograph,
    build_dicom_results,
    read_radiograph,
)
from cxr_core.measure import lung_union
from cxr_core.writers.overlay import (
    LUNG_MARGIN_FRACTION,
    gray_rgb,
    lung_heat_weight,
    overlay_parts,
    overlay_rgb,
    render_overlay,
)
from tests.conftest import RG1_UNCR, dciodvfy_errors

PNEUMOTHORAX_RGB = (255, 220, 0)


@pytest.fixture(scope="module")
def small(engine, shared_data: Path) -> Analysis:
    """gb_063: 237x328 px, pneumothorax reported at the right apex, positive findings with
    heat maps (the image the old corner legend covered a third of, pneumothorax and all)."""
    analysis = engine.analyze(read_radiograph(
        shared_data / "covid_cxr_gb_lr_lungs" / "images" / "gb_063.png"))
    assert "pneumothorax" in analysis.segments
    assert any(f.positive and f.heatmap is not None for f in analysis.findings)
    return analysis


def _texts(analysis: Analysis) -> list[str]:
    return [line.text for line in overlay_parts(analysis).legend]


def test_legend_is_beside_the_image_never_on_it(small: Analysis) -> None:
    parts = overlay_parts(small)
    overlay = render_overlay(small)
    height, width = parts.image.shape[:2]
    assert (height, width) == small.radiograph.shape  # small images are not subsampled
    np.testing.assert_array_equal(overlay[:height, :width], parts.image)
    panel = overlay[:, width:]
    assert panel.shape[1] >= 20 * 13  # room for 13 px text, however small the image
    assert 0 < panel.any(axis=2).mean() < 0.5  # text on black


def test_pneumothorax_on_a_small_image_is_fully_visible(small: Analysis) -> None:
    image = overlay_parts(small).image
    mask = small.segments["pneumothorax"].mask
    outline = (image == PNEUMOTHORAX_RGB).all(axis=2)
    assert outline.any() and not (outline & ~mask).any()
    # inside the outline the fill is yellowish: more red and green than blue
    inner = ndimage.binary_erosion(mask, iterations=2)
    pixels = image[inner].astype(int)
    assert (pixels[:, 0] > pixels[:, 2]).all() and (pixels[:, 1] > pixels[:, 2]).all()


def test_heat_tints_only_the_hottest_part_within_the_lungs(small: Analysis) -> None:
    without_heat = dataclasses.replace(small, findings=[
        dataclasses.replace(f, heatmap=None) for f in small.findings])
    tinted = (overlay_parts(small).image != overlay_parts(without_heat).image).any(axis=2)
    lungs = lung_union({n: s.mask for n, s in small.segments.items()})
    assert lungs is not None
    margin = max(1, round(LUNG_MARGIN_FRACTION * lungs.shape[1]))
    region = ndimage.binary_dilation(lungs, iterations=margin)
    assert tinted.any() and not (tinted & ~region).any()
    # far from the 91 % of the image the former wash tinted
    assert tinted.sum() / region.sum() < 0.5
    heat_line = next(t for t in _texts(small) if t.startswith("Heat"))
    assert "where the classifier looked" in heat_line and "not a lesion outline" in heat_line


def test_no_tint_without_lungs(small: Analysis) -> None:
    no_lungs = dataclasses.replace(small, segments={})
    parts = overlay_parts(no_lungs)
    expected = gray_rgb(small.radiograph.pixels).clip(0, 255).astype(np.uint8)
    np.testing.assert_array_equal(parts.image, expected)
    assert "heat map not drawn: no lungs found" in _texts(no_lungs)


def test_lung_heat_weight_keeps_the_top_quarter_within_the_grown_lungs() -> None:
    rows, columns = np.mgrid[0:200, 0:300]
    heatmap = (columns / 299.0).astype(np.float32)  # hottest at the right border
    lungs = np.zeros((200, 300), bool)
    lungs[40:160, 60:240] = True
    weight = lung_heat_weight(heatmap, lungs)
    assert weight is not None and weight.dtype == np.float32
    assert weight.max() <= 0.4 + 1e-6
    margin = round(LUNG_MARGIN_FRACTION * 300)
    region = ndimage.binary_dilation(lungs, iterations=margin)
    assert not weight[~region].any()  # the hot border outside the lungs stays clean
    share = float((weight[region] > 0.01).mean())
    assert 0.2 < share < 0.4
    assert weight[100, 235] > weight[100, 200] > 0 and weight[100, 100] == 0
    assert lung_heat_weight(heatmap, None) is None
    assert lung_heat_weight(heatmap, np.zeros_like(lungs)) is None
    assert lung_heat_weight(np.full_like(heatmap, 0.7), lungs) is None  # flat: nothing to say
    with pytest.raises(ValueError, match="lungs"):
        lung_heat_weight(heatmap, lungs[:100])


def test_a_rule_that_overrode_the_probability_is_in_the_legend(small: Analysis) -> None:
    note = ("1.00 is the highest pixel probability; the pixels above 0.5 cover 0.35% of "
            "the image within the lungs, below the minimum area (0.40% of the image): "
            "not reported")
    overruled = dataclasses.replace(small, findings=[
        dataclasses.replace(f, positive=False, note=note) if f.name == "pneumothorax" else f
        for f in small.findings])
    texts = _texts(overruled)
    probability = next(f.probability for f in small.findings if f.name == "pneumothorax")
    assert f"pneumothorax: {probability:.2f} (not reported)" in texts
    assert note in texts
    # every other finding keeps the plain form (a positive one followed by its zones)
    assert any("(positive)" in t for t in texts)


def test_very_wide_image_gets_the_legend_below() -> None:
    pixels = np.random.default_rng(0).uniform(0, 255, (200, 900)).astype(np.float32)
    analysis = Analysis(radiograph=Radiograph(pixels=pixels, spacing=PixelSpacing.unknown(),
                                              id="wide"))
    overlay = render_overlay(analysis)
    assert overlay.shape[1] == 900 and overlay.shape[0] > 200
    np.testing.assert_array_equal(overlay[:200], overlay_parts(analysis).image)


@pytest.fixture(scope="module")
def large(engine) -> Analysis:
    """RG1_UNCR: 1955x1841 px, drawn at half size."""
    return engine.analyze(read_radiograph(RG1_UNCR))


def test_large_image_part_keeps_at_most_1024_px(large: Analysis) -> None:
    parts = overlay_parts(large)
    assert parts.image.shape[:2] == (978, 921)  # every second pixel, as before the panel
    overlay = render_overlay(large)
    assert overlay.shape[0] == 978 and overlay.shape[1] > 921


def test_overlay_secondary_capture_is_valid_and_shows_the_overlay(large: Analysis,
                                                                  tmp_path: Path) -> None:
    results = build_dicom_results(large.radiograph.source_dataset, large,
                                  DicomOptions(overlay=True))
    assert results.overlay is not None
    path = tmp_path / "overlay.dcm"
    results.overlay.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, render_overlay(large))


def _whole_image_overlay_rgb(rgb: np.ndarray, masks: dict[str, np.ndarray],
                             alpha: float) -> np.ndarray:
    """overlay_rgb as it was, over the whole image (red, one opacity)."""
    rgb = rgb.copy()
    color = np.array((255, 0, 0), dtype=np.float32)
    for mask in masks.values():
        if mask.any():
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * color
            edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, mask.shape[0] // 400))
            rgb[edge] = color
    return rgb.clip(0, 255).astype(np.uint8)


def _whole_image_heat_weight(heatmap: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """lung_heat_weight as it was, over the whole image (defaults, lungs not flat)."""
    margin = max(1, round(LUNG_MARGIN_FRACTION * lungs.shape[1]))
    region = ndimage.binary_dilation(lungs, iterations=margin)
    inside = heatmap[region]
    low, high = float(np.quantile(inside, 0.75)), float(inside.max())
    ramp = np.clip((heatmap - low) / max(high - low, 1e-3), 0.0, 1.0)
    weight = np.where(heatmap >= low, 0.15 + 0.25 * ramp, 0.0).astype(np.float32)
    weight = np.asarray(ndimage.gaussian_filter(weight, sigma=margin), dtype=np.float32)
    weight[~region] = 0.0
    return weight


@pytest.mark.parametrize("size", ["small", "large"])
def test_masks_and_tint_drawn_within_their_boxes_equal_the_whole_image_ones(
        size: str, request: pytest.FixtureRequest) -> None:
    """overlay_rgb and lung_heat_weight work within each mask's box (mask_window): the
    same pixels as over the whole image, on real masks and maps, and on masks that touch
    the image's edges (where the box is cut)."""
    analysis: Analysis = request.getfixturevalue(size)
    masks = {name: segment.mask for name, segment in analysis.segments.items()}
    edged = {name: mask.copy() for name, mask in masks.items()}
    edged["heart"][-2:, :40] = True
    edged["left_lung"][:3, :] = True
    edged["right_lung"][:, -2:] = True
    gray = gray_rgb(analysis.radiograph.pixels)
    for case in (masks, edged):
        drawn = overlay_rgb(gray.copy(), case, {}, alpha=0.3)
        np.testing.assert_array_equal(drawn, _whole_image_overlay_rgb(gray, case, 0.3))
        lungs = lung_union(case)
        assert lungs is not None
        heat = np.maximum.reduce([f.heatmap for f in analysis.findings
                                  if f.positive and f.heatmap is not None])
        weight = lung_heat_weight(heat, lungs)  # the positive findings' maps, as drawn
        assert weight is not None and weight.any()
        np.testing.assert_array_equal(weight, _whole_image_heat_weight(heat, lungs))
