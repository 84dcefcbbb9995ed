"""``cxr evaluate findings``: the classifier as the engine runs it, on a split.

AUC, sensitivity and specificity at the card's thresholds with bootstrap 95 % intervals
(overall, AP, PA, and how far a score saying only "PA" gets), calibration (ECE and a
reliability diagram), ROC curves, confusion matrices, and Grad-CAM heat maps against the
NIH boxes: pointing game and IoU, and the lung-zone hit rate (:mod:`cxr_core.zones`), each
rate with a Wilson 95 % interval.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from tqdm import tqdm

from cxr_core.io import read_radiograph
from cxr_core.measure import lung_union
from cxr_core.padding import condition, paste
from cxr_core.segmentation import Segmenter
from cxr_core.stages.findings import FindingsClassifier
from cxr_core.training.findings_data import LABELS, Box, FindingsSample
from cxr_core.training.metrics import (
    bootstrap_interval,
    expected_calibration_error,
    reliability_bins,
    roc_auc,
    roc_curve,
    sensitivity_specificity,
    wilson,
)
from cxr_core.training.plots import (
    plot_calibration,
    plot_confusion,
    plot_roc,
    save_montage,
)
from cxr_core.writers.overlay import heatmap_rgb
from cxr_core.zones import SIDE_SEGMENTS, reported_zones, zone_key, zone_masks, zone_shares

VIEWS = ("AP", "PA")
HEATMAP_IOU_LEVEL = 0.5
HEATMAP_LABEL = "pneumonia"
"""The label whose Grad-CAM is compared with the NIH boxes (they outline pneumonia)."""


@dataclass
class Prediction:
    """The classifier's calibrated probabilities for one image (and its heat map)."""

    sample: FindingsSample
    probabilities: npt.NDArray[np.float32]
    heatmap: npt.NDArray[np.float32] | None
    """Grad-CAM of :data:`HEATMAP_LABEL` (boxed and montage images only)."""
    pixels: npt.NDArray[np.float32] | None
    lungs: dict[str, npt.NDArray[np.bool_]] | None = None
    """The lung masks on the heat map's grid (heat-mapped images, with a lung model)."""


# --------------------------------------------------------------------------- figures


def operating_figures(labels: npt.NDArray[Any], probabilities: npt.NDArray[Any],
                      threshold: float, seed: int = 0) -> dict[str, Any]:
    """AUC, sensitivity and specificity at ``threshold``, each with a bootstrap 95 % CI."""
    truth = np.asarray(labels, dtype=bool)
    figures: dict[str, Any] = {"n": int(truth.size), "n_positive": int(truth.sum())}
    statistics: dict[str, Callable[[npt.NDArray[np.int64]], float]] = {
        "auc": lambda i: roc_auc(truth[i], probabilities[i]),
        "sensitivity": lambda i: sensitivity_specificity(truth[i], probabilities[i],
                                                         threshold)[0],
        "specificity": lambda i: sensitivity_specificity(truth[i], probabilities[i],
                                                         threshold)[1],
    }
    everything = np.arange(truth.size)
    for name, statistic in statistics.items():
        figures[name] = round(statistic(everything), 4)
        figures[f"{name}_ci95"] = bootstrap_interval(statistic, truth.size, seed=seed)
    return figures


def split_figures(targets: npt.NDArray[Any], probabilities: npt.NDArray[Any],
                  views: Sequence[str], thresholds: Sequence[float],
                  labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Per label (columns of ``targets`` and ``probabilities``, named by ``labels``):
    figures over all images and within each view (AP, PA), and how far a score that only
    says "PA" gets (the view confound this set is known for)."""
    view_array = np.asarray(views)
    figures: dict[str, Any] = {}
    for index, label in enumerate(labels):
        truth, scores = targets[:, index] > 0.5, probabilities[:, index]
        per_label: dict[str, Any] = {"all": operating_figures(truth, scores, thresholds[index])}
        for view in VIEWS:
            inside = view_array == view
            if inside.any():
                per_label[view] = operating_figures(truth[inside], scores[inside],
                                                    thresholds[index])
        is_pa = (view_array == "PA").astype(float)
        per_label["view_only_auc"] = round(roc_auc(truth, is_pa), 4)
        figures[label] = per_label
    return figures


# ------------------------------------------------------------------------ prediction


def predict_samples(classifier: FindingsClassifier, segmenter: Segmenter | None,
                    samples: Sequence[FindingsSample],
                    heatmap_for: Callable[[FindingsSample], bool]) -> list[Prediction]:
    """Run the classifier as the engine does (conditioned image: frame cropped, corners
    filled; lungs from the segmenter); Grad-CAM of :data:`HEATMAP_LABEL` for the samples
    ``heatmap_for`` picks, on the received image's grid, with their lung masks when there
    is a segmenter."""
    if classifier.lung_masked and segmenter is None:
        raise ValueError("segmenter: a lung-masked classifier needs the lung model")
    label_index = classifier.card.labels.index(HEATMAP_LABEL)
    predictions = []
    for sample in tqdm(samples, desc="predicting", unit="image", leave=False):
        pixels = read_radiograph(sample.image).pixels
        conditioned, box = condition(pixels)
        wanted = heatmap_for(sample)
        masks = (segmenter(conditioned).masks if segmenter is not None
                 and (classifier.lung_masked or wanted) else None)
        lungs = lung_union(masks) if classifier.lung_masked and masks is not None else None
        network_input = classifier.input(conditioned, lungs)
        probabilities = classifier.probabilities(network_input)[0]
        heatmap = (paste(classifier.heatmap(network_input, label_index, conditioned.shape),
                         box, pixels.shape) if wanted else None)
        located = ({name: paste(masks[name], box, pixels.shape)
                    for name in SIDE_SEGMENTS.values() if name in masks}
                   if wanted and masks is not None else None)
        predictions.append(Prediction(sample, probabilities, heatmap,
                                      pixels if wanted else None, located))
    return predictions


# ---------------------------------------------------------------------- localisation


def peak_location(heatmap: npt.NDArray[Any]) -> tuple[int, int]:
    """``(row, column)`` of the heat map's maximum."""
    row, column = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(row), int(column)


def box_mask(shape: tuple[int, ...], boxes: Sequence[Box]) -> npt.NDArray[np.bool_]:
    """The union of ``boxes`` as a boolean mask (boxes cover every pixel they touch)."""
    mask = np.zeros(shape, dtype=bool)
    for _, x, y, w, h in boxes:
        mask[max(int(y), 0):int(math.ceil(y + h)), max(int(x), 0):int(math.ceil(x + w))] = True
    return mask


def localisation_figures(predictions: Sequence[Prediction]) -> dict[str, Any]:
    """Pointing game (heat-map peak inside an NIH box, with a Wilson 95 % interval), IoU
    of the map thresholded at :data:`HEATMAP_IOU_LEVEL` with the union of the boxes, and
    the lung-zone hit rates (:func:`zone_figures`)."""
    hits, ious = [], []
    for prediction in predictions:
        if prediction.heatmap is None:
            continue
        boxes = box_mask(prediction.heatmap.shape, prediction.sample.boxes)
        hits.append(bool(boxes[peak_location(prediction.heatmap)]))
        hot = prediction.heatmap >= HEATMAP_IOU_LEVEL
        ious.append(float((hot & boxes).sum() / max((hot | boxes).sum(), 1)))
    if not hits:
        return {"n": 0}
    return {"n": len(hits), "pointing_game": round(float(np.mean(hits)), 4),
            "hits": int(sum(hits)), "pointing_game_ci95": wilson(int(sum(hits)), len(hits)),
            "iou_mean": round(float(np.mean(ious)), 4),
            "iou_median": round(float(np.median(ious)), 4),
            "iou_level": HEATMAP_IOU_LEVEL, "zones": zone_figures(predictions)}


ZONE_CRITERIA = ("top_zone_centre", "top_zone_overlap", "any_zone_centre", "any_zone_overlap")
"""Zone hit criteria: the top zone / any reported zone holds an NIH box's centre / overlaps
an NIH box."""


def box_centres(boxes: Sequence[Box], shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(row, column)`` of each box's centre, clipped to the image."""
    return [(min(max(int(y + h / 2), 0), shape[0] - 1), min(max(int(x + w / 2), 0),
                                                              shape[1] - 1))
            for _, x, y, w, h in boxes]


def zone_hits(heatmap: npt.NDArray[Any], lungs: dict[str, npt.NDArray[np.bool_]],
              boxes: Sequence[Box]) -> dict[str, float]:
    """Whether the zones a finding with this heat map names meet the NIH ``boxes`` (each
    of :data:`ZONE_CRITERIA`, 0/1; a map that names no zone misses), and what naming
    zones at random would score: the share of the six zones that hold a box centre
    (``chance_centre``) or overlap a box (``chance_overlap``)."""
    zones = zone_masks(lungs)
    inside = box_mask(heatmap.shape, boxes)
    centres = box_centres(boxes, heatmap.shape)
    centre = {k: any(bool(m[c]) for c in centres) for k, m in zones.items()}
    overlap = {k: bool((m & inside).any()) for k, m in zones.items()}
    named = [zone_key(z.side, z.level) for z in reported_zones(zone_shares(heatmap, lungs))]
    top = named[:1]
    hits = {"top_zone_centre": any(centre[k] for k in top),
            "top_zone_overlap": any(overlap[k] for k in top),
            "any_zone_centre": any(centre[k] for k in named),
            "any_zone_overlap": any(overlap[k] for k in named)}
    count = max(len(zones), 1)
    return {**{k: float(v) for k, v in hits.items()}, "zones_named": float(len(named)),
            "chance_centre": sum(centre.values()) / count,
            "chance_overlap": sum(overlap.values()) / count}


def zone_figures(predictions: Sequence[Prediction]) -> dict[str, Any]:
    """Zone hit rates on the heat-mapped predictions that have lung masks: hits, rate and
    Wilson 95 % interval per criterion (:data:`ZONE_CRITERIA`), the mean number of zones
    named, and the rates naming zones at random would reach."""
    rows = [zone_hits(p.heatmap, p.lungs, p.sample.boxes) for p in predictions
            if p.heatmap is not None and p.lungs is not None]
    if not rows:
        return {"n": 0, "note": "no lung masks (evaluated without a lung model)"}
    n = len(rows)
    figures: dict[str, Any] = {"n": n}
    for criterion in ZONE_CRITERIA:
        hits = int(sum(row[criterion] for row in rows))
        figures[criterion] = {"hits": hits, "rate": round(hits / n, 4),
                              "ci95": wilson(hits, n)}
    for extra in ("zones_named", "chance_centre", "chance_overlap"):
        figures[f"{extra}_mean"] = round(float(np.mean([row[extra] for row in rows])), 4)
    return figures


def evaluate_localisation(classifier: FindingsClassifier, segmenter: Segmenter | None,
                          samples: Sequence[FindingsSample]) -> dict[str, Any]:
    """Grad-CAM of :data:`HEATMAP_LABEL` and its lung zones against the NIH boxes of
    ``samples`` (the boxed ones), per split, val+test and all: pointing game, IoU and zone
    hit rates (zones need ``segmenter``)."""
    located = predict_samples(classifier, segmenter, [s for s in samples if s.boxes],
                              lambda s: True)
    return localisation_groups(located)


def localisation_groups(located: Sequence[Prediction]) -> dict[str, Any]:
    """:func:`localisation_figures` per split, on val+test and on all ``located``."""
    splits = sorted({p.sample.split for p in located})
    return {
        "heatmap_label": HEATMAP_LABEL,
        **{s: localisation_figures([p for p in located if p.sample.split == s])
           for s in splits},
        "val+test": localisation_figures([p for p in located if p.sample.split != "train"]),
        "all": localisation_figures(located),
    }


# -------------------------------------------------------------------------- evaluate


def evaluate_findings(classifier: FindingsClassifier, segmenter: Segmenter | None,
                      samples: Sequence[FindingsSample], boxed: Sequence[FindingsSample],
                      out_dir: Path, split: str = "test") -> dict[str, Any]:
    """Figures on ``samples`` plus pointing game / IoU on ``boxed``; writes
    predictions.csv, roc.png, confusion.png, calibration.png and heatmaps.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = classifier.card.labels
    predictions = predict_samples(classifier, segmenter, samples, lambda s: bool(s.boxes))
    targets = np.array([[p.sample.labels.get(la, 0.0) for la in labels] for p in predictions])
    probabilities = np.stack([p.probabilities for p in predictions])
    thresholds = classifier.thresholds
    views = [p.sample.view for p in predictions]
    _write_predictions(predictions, labels, thresholds, out_dir / "predictions.csv")
    _write_figures(targets, probabilities, views, labels, thresholds, out_dir)
    evaluated = {p.sample.key for p in predictions}
    located = [p for p in predictions if p.heatmap is not None] + predict_samples(
        classifier, segmenter, [s for s in boxed if s.key not in evaluated], lambda s: True)
    _heatmap_montage(located[:8], labels, out_dir / "heatmaps.png")
    return {
        "split": split,
        "figures": split_figures(targets, probabilities, views, thresholds, labels),
        "ece": {la: round(expected_calibration_error(targets[:, i], probabilities[:, i]), 4)
                for i, la in enumerate(labels)},
        "thresholds": dict(zip(labels, thresholds, strict=True)),
        "localisation": localisation_groups(located),
    }


def _write_predictions(predictions: Sequence[Prediction], labels: Sequence[str],
                       thresholds: Sequence[float], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "split", "view", "source"] + [f"label_{la}" for la in labels]
                        + [f"probability_{la}" for la in labels]
                        + [f"positive_{la}" for la in labels])
        for p in predictions:
            writer.writerow(
                [p.sample.image.name, p.sample.split, p.sample.view, p.sample.source]
                + [int(p.sample.labels.get(la, -1)) for la in labels]
                + [f"{v:.4f}" for v in p.probabilities]
                + [int(v >= t) for v, t in zip(p.probabilities, thresholds, strict=True)])


def _write_figures(targets: npt.NDArray[Any], probabilities: npt.NDArray[Any],
                   views: Sequence[str], labels: Sequence[str], thresholds: Sequence[float],
                   out_dir: Path) -> None:
    view_array = np.asarray(views)
    curves: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]] = {}
    matrices: dict[str, npt.NDArray[np.int_]] = {}
    reliability: dict[str, list[tuple[float, float, int]]] = {}
    for i, label in enumerate(labels):
        truth = targets[:, i] > 0.5
        for group in ("all", *VIEWS):
            inside = np.ones_like(truth) if group == "all" else view_array == group
            fpr, tpr = roc_curve(truth[inside], probabilities[inside, i])
            curves[f"{label} {group}"] = (fpr, tpr, roc_auc(truth[inside],
                                                            probabilities[inside, i]))
        called = probabilities[:, i] >= thresholds[i]
        matrices[label] = np.array([[np.sum(~truth & ~called), np.sum(~truth & called)],
                                    [np.sum(truth & ~called), np.sum(truth & called)]])
        reliability[label] = reliability_bins(targets[:, i], probabilities[:, i])
    plot_roc(curves, out_dir / "roc.png")
    plot_confusion(matrices, out_dir / "confusion.png")
    plot_calibration(reliability, out_dir / "calibration.png")


def _heatmap_montage(predictions: Sequence[Prediction], classifier_labels: Sequence[str],
                     path: Path) -> None:
    """Image and Grad-CAM overlay with the NIH boxes outlined in green."""
    rows: list[list[npt.NDArray[Any]]] = []
    labels: list[str] = []
    for p in predictions:
        if p.pixels is None or p.heatmap is None:
            continue
        boxes = box_mask(p.pixels.shape, p.sample.boxes)
        rgb = heatmap_rgb(p.pixels, p.heatmap)
        rgb[boxes & ~ndimage.binary_erosion(boxes, iterations=2)] = (0, 255, 0)
        rows.append([p.pixels, rgb])
        probability = p.probabilities[list(classifier_labels).index(HEATMAP_LABEL)]
        labels.append(f"{p.sample.key} ({p.sample.split}) p={probability:.2f}")
    if rows:
        save_montage(rows, ["image", f"Grad-CAM {HEATMAP_LABEL} + NIH box"], path, labels)
