"""``cxr train lung`` / ``cxr evaluate lung``: right lung, left lung, heart/mediastinum."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cxr_core.io import read_radiograph
from cxr_core.models import ModelCard
from cxr_core.models.card import load_model, save_model
from cxr_core.segmentation import LARGEST_COMPONENT, Segmenter
from cxr_core.segments import SEGMENT_TYPES
from cxr_core.training.data import (
    LUNG_STRUCTURES,
    SegSample,
    datalist_samples,
    dataset_sources,
    load_tensors,
    sample_targets,
    shared_lung_samples,
)
from cxr_core.training.plots import overlay_rgb, plot_curves, save_montage
from cxr_core.training.segtrain import SegTrainConfig, TensorSet, train_segmentation

log = logging.getLogger(__name__)

LUNG_NETWORK = {
    "spatial_dims": 2, "in_channels": 1, "out_channels": len(LUNG_STRUCTURES),
    "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 1,
}
DATASETS = ("covid_cxr_v7lungs", "covid_cxr_gb_lr_lungs")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lung_samples(data_root: Path, datalist: Path | None,
                 datalist_only: bool = False) -> list[SegSample]:
    """Shared samples plus the datalist's; with ``datalist_only`` the shared training
    split is left out (its val split still picks the checkpoint, its test split scores)."""
    samples = shared_lung_samples(data_root)
    if datalist_only:
        if datalist is None:
            raise ValueError("datalist_only: needs a datalist")
        samples = [s for s in samples if s.split != "train"]
    if datalist is not None:
        samples += datalist_samples(datalist, LUNG_STRUCTURES)
    return samples


def train_lung(
    *, data_root: Path, out_dir: Path, command: str, datalist: Path | None = None,
    init_from: str | Path | None = None, size: int = 256, config: SegTrainConfig,
    version: str = "1.0.0", datalist_only: bool = False,
) -> ModelCard:
    """Train (or fine-tune ``init_from``), evaluate on the test split, save weights + card.

    With a datalist and ``init_from``, the card also gets Dice on the datalist's training
    images before (the parent model) and after (the new one): did the corrections teach
    the model what the readers changed?
    """
    samples = lung_samples(data_root, datalist, datalist_only)
    by_split = {s: [x for x in samples if x.split == s] for s in ("train", "val", "test")}
    log.info("samples: %s", {k: len(v) for k, v in by_split.items()})
    grid = (size, size)
    train_set = TensorSet(*load_tensors(by_split["train"], LUNG_STRUCTURES, grid))
    val_set = TensorSet(*load_tensors(by_split["val"], LUNG_STRUCTURES, grid))
    if init_from is not None:
        network, base_card = load_model(init_from)
        corrected = [s for s in by_split["train"] if datalist and s.source == str(datalist)]
        before = evaluate_lung(Segmenter(network, base_card), corrected, out_dir,
                               montage_count=0) if corrected else None
        network.train()
        kwargs, parent = base_card.network_kwargs, base_card.identifier
    else:
        kwargs, parent, before, corrected = LUNG_NETWORK, None, None, []
        network = ModelCard("", "", "", "UNet", kwargs, grid, []).build()
    started = time.monotonic()
    network, history = train_segmentation(network, train_set, val_set, config)
    card = ModelCard(
        name="lung_seg", version=version, task="segmentation", architecture="UNet",
        network_kwargs=kwargs, input_size=grid, labels=list(LUNG_STRUCTURES),
        training={
            "command": command, "commit": git_commit(), "parent_model": parent,
            "datasets": dataset_sources(data_root, DATASETS)
            + ([{"dataset": str(datalist), "source_md": "", "citation": "user labels"}]
               if datalist else []),
            "datalist_only": datalist_only,
            "counts": {k: len(v) for k, v in by_split.items()},
            "selection": "covid_cxr_v7lungs rows with usable_for_lung_seg; the 64 images "
            "also in covid_cxr_gb_lr_lungs use the GB masks (left/right/heart); V7 "
            "both-lung masks are split into right/left by connected component position; "
            "heart loss only where a heart mask exists",
            "epochs_run": len(history), "minutes": round((time.monotonic() - started) / 60, 1),
            "seed": config.seed, "batch_size": config.batch_size,
            "learning_rate": config.learning_rate, "history": history,
        },
        extra={"postprocess": LARGEST_COMPONENT,
               "segments": {n: SEGMENT_TYPES[n].label for n in LUNG_STRUCTURES}},
    )
    save_model(network, card, out_dir)
    plot_curves(history, LUNG_STRUCTURES, out_dir / "training_curves.png")
    card.metrics = evaluate_lung(Segmenter(network, card), by_split["test"], out_dir)
    if before is not None:
        after = evaluate_lung(Segmenter(network, card), corrected, out_dir, montage_count=0)
        card.metrics["datalist_train"] = {
            "datalist": str(datalist), "parent_model": parent, "n_images": len(corrected),
            "before": before["per_structure"], "after": after["per_structure"]}
    save_model(network, card, out_dir)
    return card


def dice_iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    overlap = float((predicted & truth).sum())
    total = float(predicted.sum() + truth.sum())
    union = total - overlap
    if total == 0:
        return 1.0, 1.0
    return 2 * overlap / total, overlap / union


def evaluate_lung(segmenter: Segmenter, samples: Sequence[SegSample], out_dir: Path,
                  montage_count: int = 6) -> dict[str, Any]:
    """Dice/IoU per structure and for both lungs together, at the mask's resolution."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scores: dict[str, list[tuple[float, float]]] = {}
    montage_rows, montage_labels = [], []
    for sample in tqdm(samples, desc="evaluating", unit="image"):
        image = read_radiograph(sample.image).pixels
        predicted = segmenter(image).masks
        truth = sample_targets(sample, LUNG_STRUCTURES)
        for name, mask in truth.items():
            scores.setdefault(name, []).append(dice_iou(predicted[name], mask))
        if "right_lung" in truth and "left_lung" in truth:
            both_truth = truth["right_lung"] | truth["left_lung"]
            both_pred = predicted["right_lung"] | predicted["left_lung"]
            scores.setdefault("both_lungs", []).append(dice_iou(both_pred, both_truth))
            scores.setdefault(f"both_lungs vs {sample.source}", []).append(scores["both_lungs"][-1])
        if len(montage_rows) < montage_count:
            colors = {n: SEGMENT_TYPES[n].rgb for n in LUNG_STRUCTURES}
            montage_rows.append([
                image, overlay_rgb(np.zeros_like(image), truth, colors, alpha=1.0),
                overlay_rgb(np.zeros_like(image), predicted, colors, alpha=1.0),
                overlay_rgb(image, predicted, colors)])
            montage_labels.append(sample.key)
    if montage_rows:
        save_montage(montage_rows, ["image", "truth", "prediction", "overlay"],
                     out_dir / "montage.png", montage_labels)
    return {
        "split": samples[0].split if samples else "", "n_images": len(samples),
        "resolution": "dataset masks (longest side 512)",
        "postprocess": "largest component per structure, holes filled",
        "per_structure": {
            name: {"n": len(v), "dice_mean": round(float(np.mean([d for d, _ in v])), 4),
                   "dice_median": round(float(np.median([d for d, _ in v])), 4),
                   "iou_mean": round(float(np.mean([i for _, i in v])), 4)}
            for name, v in scores.items()
        },
    }
