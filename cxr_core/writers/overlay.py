"""Drawing masks and heat maps over a radiograph, and the overlay picture of an analysis
(numpy and Pillow only: no matplotlib on the analysis path, whose start-up it would slow
by most of a second).

The overlay is the radiograph with the segments drawn on it and a legend in a black
panel beside it (below it for very wide images): never over the image, where it would
hide anatomy or a finding (on a 237x328 px image the former corner legend covered a third
of the picture, often the apex where a pneumothorax is looked for). The classifier's
heat map is drawn only inside the lungs and only where it is hottest: its Grad-CAM maps
do not localise lesions (peaks on the image border, most of the image above half heat),
so a whole-image wash would claim more than they know.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cxr_core.analysis import Analysis, Finding
from cxr_core.measure import lung_union, mask_window
from cxr_core.terminology import SEGMENT_TYPES
from cxr_core.zones import zone_key, zone_masks

# matplotlib's "jet" (its _jet_data): breakpoints and values per channel
_JET = (
    ((0.0, 0.35, 0.66, 0.89, 1.0), (0.0, 0.0, 1.0, 1.0, 0.5)),
    ((0.0, 0.125, 0.375, 0.64, 0.91, 1.0), (0.0, 0.0, 1.0, 1.0, 0.0, 0.0)),
    ((0.0, 0.11, 0.34, 0.65, 1.0), (0.5, 1.0, 1.0, 0.0, 0.0)),
)
# Magenta: no segment uses it, and unlike jet's yellows and reds it cannot be taken
# for the pneumothorax (yellow) or the heart (orange-red).
HEAT_RGB = (255, 0, 255)
HEAT_QUANTILE = 0.75
"""Only heat above this quantile of the heat within the lungs is tinted."""
LUNG_MARGIN_FRACTION = 0.01
"""The lungs are grown by this fraction of the image width before the heat is cut to
them, so heat on the lung edge (pleura, costophrenic angles) stays visible."""
ANATOMY_ALPHA, LESION_ALPHA = 0.15, 0.4
"""Fill opacity: light over anatomy so the parenchyma stays readable, stronger over a
lesion so it stands out."""
WIDE_RATIO = 1.6
"""Images wider than this times their height get the legend below, not beside."""
_WHITE, _GRAY, _AMBER, _RED = (255, 255, 255), (200, 200, 200), (255, 200, 120), (255, 96, 96)
ZONE_RGB = _WHITE
"""Outline of the lung zones positive findings lie in: no segment is drawn in white."""


def jet_rgb(values: np.ndarray) -> np.ndarray:
    """0..1 values in the ``jet`` colours, float RGB 0..255 (last axis)."""
    clipped = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(clipped, x, y) for x, y in _JET], axis=-1) * 255


def gray_rgb(gray: np.ndarray) -> np.ndarray:
    """A gray image (any range) windowed to its 0.5-99.5 percentiles, float32 RGB 0..255."""
    low, high = np.percentile(gray[::4, ::4], (0.5, 99.5))
    base = np.clip((gray - low) / max(float(high - low), 1e-6), 0, 1)
    return np.repeat((base * 255)[..., None], 3, axis=2).astype(np.float32)


def overlay_rgb(gray: np.ndarray, masks: dict[str, np.ndarray],
                colors: dict[str, tuple[int, int, int]], alpha: float | dict[str, float] = 0.4
                ) -> np.ndarray:
    """Gray image (any range) or uint8 RGB with coloured translucent masks and their
    outlines, uint8 RGB.

    ``alpha`` is the fill opacity, one for all masks or one per mask name (default 0.4).
    """
    from scipy import ndimage

    rgb = gray.astype(np.float32) if gray.ndim == 3 else gray_rgb(gray)
    for name, mask in masks.items():
        window = mask_window(mask, 1)
        if window is None:
            continue
        color = np.array(colors.get(name, (255, 0, 0)), dtype=np.float32)
        opacity = alpha.get(name, 0.4) if isinstance(alpha, dict) else alpha
        # within the mask's box: outside it nothing is filled, eroded or outlined
        part, inside = rgb[window], mask[window]
        part[inside] = (1 - opacity) * part[inside] + opacity * color
        edge = inside & ~ndimage.binary_erosion(inside,
                                                iterations=max(1, mask.shape[0] // 400))
        part[edge] = color
    return rgb.clip(0, 255).astype(np.uint8)


def heatmap_rgb(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5,
                floor: float = 0.2) -> np.ndarray:
    """A 0..1 heat map (same shape) in the ``jet`` colours over a gray or RGB image, uint8 RGB.

    Heat below ``floor`` is left out so the anatomy stays readable where the model did not
    look; above it, the blend grows with the heat up to ``alpha``.
    """
    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap: shape {heatmap.shape} differs from the image's "
                         f"{image.shape[:2]}")
    rgb = image.astype(np.float32) if image.ndim == 3 else overlay_rgb(image, {}, {}).astype(
        np.float32)
    colours = jet_rgb(heatmap)
    weight = (alpha * np.clip((heatmap - floor) / (1 - floor), 0, 1))[..., None]
    blended: np.ndarray = ((1 - weight) * rgb + weight * colours).clip(0, 255)
    return blended.astype(np.uint8)


def lung_heat_weight(heatmap: np.ndarray, lungs: np.ndarray | None, *,
                     quantile: float = HEAT_QUANTILE,
                     margin_fraction: float = LUNG_MARGIN_FRACTION) -> np.ndarray | None:
    """Tint opacity (0..1) for the hottest part of a heat map within the lungs.

    The lungs are grown by ``margin_fraction`` of the width; within them, heat at or
    above its ``quantile`` gets an opacity growing from 0.15 to 0.4 with the heat, and
    everything else none; the edge is softened over 1 % of the width (the maps come from
    a 7x7 grid, and their plateaus have blocky edges that look like structure). Grad-CAM
    maps saturate: when more than the top quarter sits at the maximum, that plateau is
    what is tinted.

    Returns
    -------
    numpy.ndarray or None
        Float32 weights of ``heatmap``'s shape; None when there are no lungs, or the heat
        within them is flat (nothing hotter to show).
    """
    from scipy import ndimage

    if lungs is None or not lungs.any():
        return None
    if lungs.shape != heatmap.shape:
        raise ValueError(f"lungs: shape {lungs.shape} differs from the heat map's "
                         f"{heatmap.shape}")
    margin = max(1, round(margin_fraction * lungs.shape[1]))
    # each step is computed within the box that can hold a non-zero result (mask_window):
    # the grown lungs, then the blur's reach around them (scipy's radius for sigma)
    near = mask_window(lungs, margin + 1)
    assert near is not None  # lungs.any()
    region = np.zeros_like(lungs)
    region[near] = ndimage.binary_dilation(lungs[near], iterations=margin)
    inside = heatmap[region]
    low, high = float(np.quantile(inside, quantile)), float(inside.max())
    if high - float(inside.min()) <= 1e-3:
        return None
    reach = mask_window(region, int(4.0 * margin + 0.5))
    assert reach is not None
    near_heat = heatmap[reach]
    ramp = np.clip((near_heat - low) / max(high - low, 1e-3), 0.0, 1.0)
    tint = np.where(near_heat >= low, 0.15 + 0.25 * ramp, 0.0).astype(np.float32)
    weight = np.zeros(heatmap.shape, dtype=np.float32)
    weight[reach] = ndimage.gaussian_filter(tint, sigma=margin, truncate=4.0)
    weight[~region] = 0.0
    return weight


@dataclass
class LegendLine:
    """One line of the overlay's legend (wrapped to the panel when drawn)."""

    text: str
    color: tuple[int, int, int]
    swatch: tuple[int, int, int] | None = None
    """A colour square before the text (segments, heat tint)."""
    indent: bool = False
    """A note under the line before it: indented."""


@dataclass
class OverlayParts:
    """What :func:`render_overlay` puts side by side."""

    image: np.ndarray
    """The radiograph (subsampled to at most ``max_side``) with the segments and heat
    tint, uint8 RGB: nothing else is drawn on it."""
    legend: list[LegendLine]


def overlay_parts(analysis: Analysis, max_side: int = 1024) -> OverlayParts:
    """The overlay's image part and its legend, before they are put side by side."""
    pixels = analysis.radiograph.pixels
    step = max(1, int(np.ceil(max(pixels.shape) / max_side)))
    masks = {n: s.mask[::step, ::step] for n, s in analysis.segments.items()}
    colors = {n: SEGMENT_TYPES[n].rgb for n in masks if n in SEGMENT_TYPES}
    alphas = {n: LESION_ALPHA if n == "pneumothorax" else ANATOMY_ALPHA for n in masks}
    base = gray_rgb(pixels[::step, ::step])
    heat = _heat(analysis, step, masks)
    # heat first, masks and outlines on top: the outlines must stay readable
    if heat.weight is not None:
        weight = heat.weight[..., None]
        base = (1 - weight) * base + weight * np.array(HEAT_RGB, dtype=np.float32)
    image = overlay_rgb(base, masks, colors, alpha=alphas)
    zones = finding_zone_masks(analysis, masks)
    if zones:  # outlines only, on top of everything
        image = overlay_rgb(image, zones, dict.fromkeys(zones, ZONE_RGB), alpha=0.0)
    return OverlayParts(image, _legend(analysis, heat, bool(zones)))


def finding_zone_masks(analysis: Analysis, masks: dict[str, np.ndarray]
                       ) -> dict[str, np.ndarray]:
    """The zone masks (:func:`cxr_core.zones.zone_masks` of ``masks``) that a positive
    finding names, by zone key."""
    named = {zone_key(z.side, z.level) for f in analysis.findings if f.positive
             for z in f.zones}
    if not named:
        return {}
    return {key: mask for key, mask in zone_masks(masks).items() if key in named}


def render_overlay(analysis: Analysis, max_side: int = 1024) -> np.ndarray:
    """RGB overlay of every segment over the radiograph (at most ``max_side`` pixels,
    subsampled by a whole step), with a legend in a panel beside it.

    The image part (:func:`overlay_parts`) keeps the radiograph's subsampled size and
    its top-left corner; the panel lies to its right, or below it when the image is more
    than :data:`WIDE_RATIO` times as wide as high.
    """
    parts = overlay_parts(analysis, max_side)
    return _with_legend(parts.image, parts.legend)


@dataclass
class _Heat:
    weight: np.ndarray | None
    """Tint opacity at the overlay's size, or None when nothing is tinted."""
    findings: list[str]
    """The positive findings whose maps were combined."""
    why_not: str | None = None
    """Why no tint is drawn although there are maps."""


def _heat(analysis: Analysis, step: int, masks: dict[str, np.ndarray]) -> _Heat:
    # the engine draws maps for positive findings only; the tint shows those
    maps = {f.name: f.heat[::step, ::step] for f in analysis.findings
            if f.positive and f.heat is not None}
    if not maps:
        return _Heat(None, [])
    lungs = lung_union(masks)
    weight = lung_heat_weight(np.maximum.reduce(list(maps.values())), lungs)
    names = list(maps)
    if weight is None:
        reason = ("no lungs found" if lungs is None or not lungs.any()
                  else "the map is flat within the lungs")
        return _Heat(None, names, f"heat map not drawn: {reason}")
    return _Heat(weight, names)


def _legend(analysis: Analysis, heat: _Heat, zones: bool = False) -> list[LegendLine]:
    """Segments in their colours; the zone outline and the heat tint and what they are;
    findings with their zones and any note that says which rule decided; the
    cardiothoracic ratio; flags in red; the caveat."""
    drawn = [SEGMENT_TYPES[n] for n, s in analysis.segments.items()
             if n in SEGMENT_TYPES and s.pixel_count]
    lines = [LegendLine(kind.label, kind.rgb, swatch=kind.rgb) for kind in drawn]
    if zones:
        lines.append(LegendLine(
            "Zone outline: the lung zones (thirds of each lung's height) holding most of "
            "a positive finding's heat map; not a lesion outline", _WHITE, swatch=ZONE_RGB))
    if heat.weight is not None:
        lines.append(LegendLine(
            f"Heat ({', '.join(heat.findings)}): where the classifier looked most, within "
            "the lungs; not a lesion outline", _WHITE, swatch=HEAT_RGB))
    elif heat.why_not:
        lines.append(LegendLine(heat.why_not, _GRAY))
    for finding in analysis.findings:
        lines += _finding_lines(finding)
    ratio = analysis.measurement("cardiothoracic_ratio")
    if ratio is not None:
        lines.append(LegendLine(f"cardiothoracic ratio {ratio.value:.2f}", _WHITE))
    lines += [LegendLine(f"! {flag}", _RED) for flag in analysis.quality_flags]
    lines.append(LegendLine("AI output, not verified", _GRAY))
    return lines


def _finding_lines(finding: Finding) -> list[LegendLine]:
    decision = "positive" if finding.positive else "negative"
    if finding.note:
        decision = "reported" if finding.positive else "not reported"
    text = f"{finding.name}: {finding.probability:.2f} ({decision})"
    if finding.positive and finding.zones:
        text += " - " + ", ".join(f"{zone.name} {zone.share:.0%}" for zone in finding.zones)
    lines = [LegendLine(text, _WHITE)]
    if finding.note:
        lines.append(LegendLine(finding.note, _AMBER, indent=True))
    return lines


@dataclass
class _Row:
    """One drawn row of the legend: a line, or part of a wrapped one."""

    text: str
    color: tuple[int, int, int]
    x: int
    """Offset from the panel's text margin."""
    swatch: tuple[int, int, int] | None


def _with_legend(rgb: np.ndarray, lines: list[LegendLine]) -> np.ndarray:
    """``rgb`` with the legend in a black panel to its right (below a very wide image);
    the image's pixels are left as they are."""
    height, width = rgb.shape[:2]
    below = width > WIDE_RATIO * height
    # readable on a 237 px image and in proportion on a 1024 px one
    size = int(np.clip(round((width if below else height) / 48), 13, 22))
    font = ImageFont.load_default(size=size)
    margin, line_height = size // 2 + 2, size + size // 4 + 2
    panel_width = width if below else max(20 * size, width // 3)
    rows = _wrap(lines, font, panel_width - 2 * margin, size)
    text_height = 2 * margin + line_height * len(rows)
    if below:
        canvas = np.zeros((height + text_height, width, 3), dtype=np.uint8)
        left, top = margin, height + margin
    else:
        canvas = np.zeros((max(height, text_height), width + panel_width, 3), dtype=np.uint8)
        left, top = width + margin, margin
    canvas[:height, :width] = rgb
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for index, row in enumerate(rows):
        x, y = left + row.x, top + index * line_height
        if row.swatch is not None:
            draw.rectangle([x - size, y + 2, x - 4, y + size - 2], fill=row.swatch)
        draw.text((x, y), row.text, fill=row.color, font=font)
    return np.asarray(image)


def _wrap(lines: list[LegendLine], font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
          width: int, size: int) -> list[_Row]:
    """Break each line into rows no wider than ``width`` pixels, at spaces (a word wider
    than a row is left whole). Text after a swatch, and notes, are indented by ``size``."""
    rows = []
    for line in lines:
        indent = size if line.swatch is not None or line.indent else 0
        words, current = line.text.split(), ""
        first = True
        for word in words:
            candidate = f"{current} {word}" if current else word
            if current and font.getlength(candidate) > width - indent:
                rows.append(_Row(current, line.color, indent, line.swatch if first else None))
                current, first = word, False
            else:
                current = candidate
        rows.append(_Row(current, line.color, indent, line.swatch if first else None))
    return rows
