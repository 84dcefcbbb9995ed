"""PNG figures for training and evaluation (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(history: Sequence[dict[str, float]], labels: Sequence[str], path: Path) -> Path:
    """Loss (train/val) and val Dice per structure against epoch."""
    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], label="train")
    left.plot(epochs, [h["val_loss"] for h in history], label="val")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    for i, label in enumerate(labels):
        right.plot(epochs, [h[f"val_dice_{i}"] for h in history], label=label)
    right.set(xlabel="epoch", ylabel="Dice", title="validation Dice", ylim=(0, 1))
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def overlay_rgb(gray: np.ndarray, masks: dict[str, np.ndarray],
                colors: dict[str, tuple[int, int, int]], alpha: float = 0.4) -> np.ndarray:
    """Gray image (any range) with coloured translucent masks and their outlines, uint8 RGB."""
    from scipy import ndimage

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


def save_montage(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], path: Path,
                 row_labels: Sequence[str] = ()) -> Path:
    """A grid of images (gray or RGB), one list per row, column titles on top."""
    n_rows, n_cols = len(rows), len(titles)
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 2.6 * n_rows),
                                squeeze=False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            axes[r][c].imshow(image, cmap="gray" if image.ndim == 2 else None)
            axes[r][c].axis("off")
            if r == 0:
                axes[r][c].set_title(titles[c], fontsize=9)
        if r < len(row_labels):
            axes[r][0].text(0, -0.02, row_labels[r], transform=axes[r][0].transAxes,
                            fontsize=7, va="top")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
