"""PNG figures for training and evaluation (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

Array = npt.NDArray[Any]


def plot_curves(history: Sequence[dict[str, float]], labels: Sequence[str], path: Path,
                metric: str = "dice") -> Path:
    """Loss (train/val) and the val ``metric`` per label (``val_<metric>_<i>``) per epoch."""
    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], label="train")
    left.plot(epochs, [h["val_loss"] for h in history], label="val")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    for i, label in enumerate(labels):
        right.plot(epochs, [h[f"val_{metric}_{i}"] for h in history], label=label)
    right.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}", ylim=(0, 1))
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def save_montage(rows: Sequence[Sequence[Array]], titles: Sequence[str], path: Path,
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


def plot_roc(curves: Mapping[str, tuple[Array, Array, float]], path: Path) -> Path:
    """ROC curves, ``{name: (false positive rate, true positive rate, AUC)}``."""
    figure, axis = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        axis.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    axis.plot([0, 1], [0, 1], color="gray", linestyle=":")
    axis.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1),
             ylim=(0, 1))
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_confusion(matrices: Mapping[str, Array], path: Path) -> Path:
    """2x2 confusion matrices ``[[TN, FP], [FN, TP]]``, one panel per label."""
    figure, axes = plt.subplots(1, len(matrices), figsize=(3.2 * len(matrices), 3.2),
                                squeeze=False)
    for axis, (name, matrix) in zip(axes[0], matrices.items(), strict=True):
        axis.imshow(matrix, cmap="Blues")
        for (row, column), count in np.ndenumerate(matrix):
            axis.text(column, row, str(int(count)), ha="center", va="center", fontsize=12)
        axis.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["neg", "pos"],
                 yticklabels=["neg", "pos"], xlabel="predicted", ylabel="truth", title=name)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_calibration(reliability: Mapping[str, Sequence[tuple[float, float, int]]],
                     path: Path) -> Path:
    """Reliability diagram: ``{name: [(mean probability, observed frequency, count)]}``."""
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect")
    for name, bins in reliability.items():
        axis.plot([b[0] for b in bins], [b[1] for b in bins], marker="o", label=name)
    axis.set(xlabel="predicted probability", ylabel="observed frequency",
             title="calibration", xlim=(0, 1), ylim=(0, 1))
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
