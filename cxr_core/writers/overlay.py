"""Drawing masks and heat maps over a radiograph, and the overlay picture of an analysis
(numpy and Pillow only: no matplotlib on the analysis path, whose start-up it would slow
by most of a second)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cxr_core.analysis import Analysis
from cxr_core.terminology import SEGMENT_TYPES

# matplotlib's "jet" (its _jet_data): breakpoints and values per channel
_JET = (
    ((0.0, 0.35, 0.66, 0.89, 1.0), (0.0, 0.0, 1.0, 1.0, 0.5)),
    ((0.0, 0.125, 0.375, 0.64, 0.91, 1.0), (0.0, 0.0, 1.0, 1.0, 0.0, 0.0)),
    ((0.0, 0.11, 0.34, 0.65, 1.0), (0.5, 1.0, 1.0, 0.0, 0.0)),
)


def jet_rgb(values: np.ndarray) -> np.ndarray:
    """0..1 values in the ``jet`` colours, float RGB 0..255 (last axis)."""
    clipped = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(clipped, x, y) for x, y in _JET], axis=-1) * 255


def overlay_rgb(gray: np.ndarray, masks: dict[str, np.ndarray],
                colors: dict[str, tuple[int, int, int]], alpha: float = 0.4) -> np.ndarray:
    """Gray image (any range) or uint8 RGB with coloured translucent masks and their
    outlines, uint8 RGB."""
    from scipy import ndimage

    if gray.ndim == 3:
        rgb = gray.astype(np.float32)
    else:
        low, high = np.percentile(gray[::4, ::4], (0.5, 99.5))
        base = np.clip((gray - low) / max(float(high - low), 1e-6), 0, 1)
        rgb = np.repeat((base * 255)[..., None], 3, axis=2).astype(np.float32)
    for name, mask in masks.items():
        if not mask.any():
            continue
        color = np.array(colors.get(name, (255, 0, 0)), dtype=np.float32)
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * color
        edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, mask.shape[0] // 400))
        rgb[edge] = color
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


def render_overlay(analysis: Analysis, max_side: int = 1024) -> np.ndarray:
    """RGB overlay of every segment over the radiograph, at most ``max_side`` pixels,
    with a legend."""
    pixels = analysis.radiograph.pixels
    step = max(1, int(np.ceil(max(pixels.shape) / max_side)))
    masks = {n: s.mask[::step, ::step] for n, s in analysis.segments.items()}
    colors = {n: SEGMENT_TYPES[n].rgb for n in masks if n in SEGMENT_TYPES}
    heat = [f.heatmap[::step, ::step] for f in analysis.findings
            if f.positive and f.heatmap is not None]
    base = overlay_rgb(pixels[::step, ::step], {}, {})
    # heat first, masks and outlines on top: the maps are broad, the masks must stay readable
    if heat:
        base = heatmap_rgb(base, np.maximum.reduce(heat), floor=0.5)
    rgb = overlay_rgb(base, masks, colors)
    return _draw_legend(rgb, analysis)


def _legend_lines(analysis: Analysis) -> list[tuple[str, tuple[int, int, int]]]:
    """Segment names in their colours, then findings and flags in white."""
    white = (255, 255, 255)
    lines = [(SEGMENT_TYPES[n].label, SEGMENT_TYPES[n].rgb)
             for n, s in analysis.segments.items() if n in SEGMENT_TYPES and s.pixel_count]
    lines += [(f"{f.name}: {f.probability:.2f} ({'positive' if f.positive else 'negative'})",
               white) for f in analysis.findings]
    ratio = analysis.measurement("cardiothoracic_ratio")
    if ratio is not None:
        lines.append((f"cardiothoracic ratio {ratio.value:.2f}", white))
    lines += [(f"! {flag}", (255, 96, 96)) for flag in analysis.quality_flags]
    return lines


def _draw_legend(rgb: np.ndarray, analysis: Analysis) -> np.ndarray:
    """A boxed legend in the top-left corner, so the picture explains itself."""
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    size = max(12, image.width // 60)
    font = ImageFont.load_default(size=size)
    lines = _legend_lines(analysis) + [("AI output, not verified", (200, 200, 200))]
    height = size + 4
    width = max(draw.textlength(text, font=font) for text, _ in lines) + 12
    draw.rectangle([0, 0, width, height * len(lines) + 6], fill=(0, 0, 0))
    for row, (text, color) in enumerate(lines):
        draw.text((6, 4 + row * height), text, fill=color, font=font)
    return np.asarray(image)
