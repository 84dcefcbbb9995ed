"""The overlay in layers, for a viewer that toggles them: the radiograph, one transparent
layer per segment and one for the heat tint, all at display size, plus the analysis'
JSON summary.

:func:`cxr_core.writers.overlay.overlay_parts` burns the same layers into one picture;
here each stays its own PNG so a page can switch segments and the heat map on and off
without the server drawing anything per request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr_core.analysis import Analysis
from cxr_core.terminology import SEGMENT_TYPES
from cxr_core.writers.overlay import (
    ANATOMY_ALPHA,
    HEAT_RGB,
    LESION_ALPHA,
    _heat,
    gray_rgb,
)
from cxr_core.writers.png import write_png

REVIEW_MAX_SIDE = 1024
"""Layers are subsampled by a whole step to at most this many pixels per side."""
SUMMARY_FILE = "analysis.json"
BASE_FILE = "radiograph.png"
HEAT_FILE = "heat.png"
LAYER_PREFIX = "segment-"
"""Segment layers are ``segment-<name>.png``."""


@dataclass
class ReviewLayers:
    """What :func:`write_review_layers` wrote."""

    folder: Path
    segments: dict[str, Path] = field(default_factory=dict)
    heat: Path | None = None


def write_review_layers(analysis: Analysis, folder: Path, *,
                        max_side: int = REVIEW_MAX_SIDE) -> ReviewLayers:
    """Write the radiograph, each segment and the heat tint as separate PNGs (RGBA for
    the layers, transparent where nothing is drawn) and ``analysis.json`` into
    ``folder`` (created).

    The layers use the overlay's colours and fill opacities, with an opaque outline
    as the overlay draws. Cheap enough for every analysis: display size, little
    compression effort.
    """
    if max_side < 16:
        raise ValueError(f"max_side: at least 16 pixels, got {max_side}")
    folder.mkdir(parents=True, exist_ok=True)
    pixels = analysis.radiograph.pixels
    step = max(1, int(np.ceil(max(pixels.shape) / max_side)))
    base = gray_rgb(pixels[::step, ::step])[..., 0].astype(np.uint8)
    write_png(base, folder / BASE_FILE)
    written = ReviewLayers(folder)
    masks = {name: s.mask[::step, ::step] for name, s in analysis.segments.items()}
    for name, mask in masks.items():
        color = SEGMENT_TYPES[name].rgb if name in SEGMENT_TYPES else (255, 255, 255)
        opacity = LESION_ALPHA if name == "pneumothorax" else ANATOMY_ALPHA
        path = folder / f"{LAYER_PREFIX}{name}.png"
        _save_layer(_fill_and_outline(mask, opacity), color, path)
        written.segments[name] = path
    heat = _heat(analysis, step, masks)
    if heat.weight is not None:
        written.heat = folder / HEAT_FILE
        _save_layer(heat.weight, HEAT_RGB, written.heat)
    (folder / SUMMARY_FILE).write_text(json.dumps(analysis.summary(), indent=2) + "\n")
    return written


def _fill_and_outline(mask: np.ndarray, fill: float) -> np.ndarray:
    """Opacity of a segment layer: ``fill`` inside, opaque on its one-pixel edge."""
    from scipy import ndimage

    inside = mask.astype(bool)
    edge = inside & ~ndimage.binary_erosion(inside)
    opacity = inside.astype(np.float32) * fill
    opacity[edge] = 1.0
    return opacity


def _save_layer(opacity: np.ndarray, color: tuple[int, int, int], path: Path) -> None:
    """``opacity`` (0..1 per pixel) as an RGBA PNG of one colour."""
    rgba = np.zeros((*opacity.shape, 4), dtype=np.uint8)
    rgba[..., :3] = color
    rgba[..., 3] = np.clip(opacity * 255, 0, 255).astype(np.uint8)
    write_png(rgba, path)
