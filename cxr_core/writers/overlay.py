"""Drawing masks and heat maps over a radiograph (numpy only: no matplotlib on the
analysis path, whose start-up it would slow by most of a second)."""

from __future__ import annotations

import numpy as np

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
    return ((1 - weight) * rgb + weight * colours).clip(0, 255).astype(np.uint8)
