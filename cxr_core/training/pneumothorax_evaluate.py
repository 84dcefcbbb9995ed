"""``cxr evaluate pneumothorax``: the detector as the engine runs it, on a split.

Dice on positives, Kaggle mean Dice (empty-empty = 1), detection AUC, sensitivity and
specificity, with bootstrap 95 % intervals; and the *source check*: since the positives
come from SIIM-ACR and most negatives from NIH, does the model score the image source
instead of the finding? (:func:`source_check`, :func:`nih_label_check`.)
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from cxr_core.analysis import Segment
from cxr_core.io import read_radiograph
from cxr_core.measure import lung_union, make_segment
from cxr_core.padding import condition, paste
from cxr_core.pneumothorax_size import HEMITHORAX_DEFINITION, hemithorax_percent
from cxr_core.radiograph import PixelSpacing
from cxr_core.segmentation import Segmenter
from cxr_core.stages.pneumothorax import (
    SEGMENT,
    Detection,
    PneumothoraxDetector,
    side_measurements,
    split_by_side,
)
from cxr_core.terminology import SEGMENT_TYPES, SIDES
from cxr_core.training.data import SegSample, read_manifest, read_mask
from cxr_core.training.metrics import auc_with_ci, dice_iou, mean_with_ci, rate
from cxr_core.training.plots import save_montage
from cxr_core.training.pneumothorax_sources import NIH_MULTILABEL_SET, NIH_SET, is_positive
from cxr_core.training.quality_eval import pneumothorax_quality_figures
from cxr_core.writers.overlay import overlay_rgb

SIIM_JPEG_QUALITY = 92
"""The SIIM-ACR DICOMs carry JPEG baseline frames with the IJG quality-92 table (read off
``dicom_samples/siim_*.dcm``); they were made from the 1024-px NIH PNGs."""


@dataclass
class Scored:
    """One evaluated image: the detection, the true mask and their Dice."""

    sample: SegSample
    detection: Detection
    truth: np.ndarray
    dice: float


def evaluate_pneumothorax(
    detector: PneumothoraxDetector, samples: Sequence[SegSample], out_dir: Path, *,
    split: str = "test", lung: Segmenter | None = None, bootstrap: int = 2000,
    data_root: Path | None = None,
) -> dict[str, Any]:
    """Dice on positives, Kaggle mean Dice, detection AUC (bootstrap 95 % intervals) on
    ``split``, and the source check on every sample kept out of training.

    With a ``lung`` model the detector runs as in the engine (thorax gate) and the source
    check includes healthy lungs; with ``data_root`` it includes the NIH images labelled
    Pneumothorax (:func:`nih_label_check`).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    scored = [_score(detector, lung, s) for s in tqdm(
        [s for s in samples if s.split == split], desc=f"evaluating {split}", unit="image")]
    if not scored:
        raise ValueError(f"split: no samples in split {split!r}")
    metrics = _figures(scored, bootstrap)
    metrics["split"] = split
    gate = (f"after dropping regions less than {detector.thorax.min_inside:.0%} inside the "
            f"lungs grown by {detector.thorax.margin_fraction:.0%} of the width, "
            if lung is not None else "(no lung model: no thorax gate) ")
    metrics["operating_rule"] = (f"present when the post-processed mask, {gate}reaches the "
                                 f"minimum area ({detector.minimum.fraction:.2%} of the image "
                                 "without trusted spacing; PNGs have none)")
    sources = {s.source for s in samples}
    mixed = "siim" in sources and "nih_normal" in sources
    metrics["source_check"] = (source_check(detector, samples, lung, bootstrap) if mixed else
                               {"reading": "not run: it compares the shared SIIM-ACR and NIH "
                                "images, which these sources do not mix"})
    if mixed and data_root is not None:
        trained = {s.image for s in samples if s.split == "train"}
        metrics["source_check"] |= nih_label_check(detector, lung, data_root, bootstrap,
                                                   trained=trained)
    if lung is not None and "siim" in sources:
        metrics["size_check"] = size_check(detector, lung, samples, bootstrap)
    metrics["caveat"] = (f"tiny split: {metrics['n_positive']} positive and "
                         f"{metrics['n_negative']} negative images" if len(scored) < 200
                         else f"{len(scored)} images")
    if mixed:
        metrics["caveat"] += ("; the positives are SIIM images, most negatives NIH images, "
                              "so AUC can reward the source")
    _montage(scored, out_dir / "montage.png")
    return metrics


def detect(detector: PneumothoraxDetector, lung: Segmenter | None, pixels: np.ndarray,
           spacing: PixelSpacing) -> tuple[Detection, dict[str, np.ndarray]]:
    """The detector as the engine runs it: on the conditioned image (frame cropped,
    corners filled), with the lung model's lungs for its thorax gate when a lung model is
    given. Returns the detection and the lung masks, on ``pixels``' grid (the pixel
    probabilities too, at that resolution)."""
    conditioned, box = condition(pixels)
    lungs = lung(conditioned).masks if lung is not None else {}
    found = detector(conditioned, spacing, lungs=lung_union(lungs))
    if box is None:
        return found, lungs
    crop = torch.from_numpy(found.probabilities)[None, None]
    probabilities = torch.nn.functional.interpolate(
        crop, size=conditioned.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    shape = pixels.shape
    return dataclasses.replace(
        found, mask=paste(found.mask, box, shape),
        probabilities=paste(probabilities, box, shape),
        candidates=None if found.candidates is None else paste(found.candidates, box, shape),
        inside=None if found.inside is None else paste(found.inside, box, shape),
    ), {name: paste(mask, box, shape) for name, mask in lungs.items()}


def _score(detector: PneumothoraxDetector, lung: Segmenter | None,
           sample: SegSample) -> Scored:
    radiograph = read_radiograph(sample.image)
    found, _ = detect(detector, lung, radiograph.pixels, radiograph.spacing)
    truth = read_mask(sample.masks[SEGMENT])
    if truth.shape != found.mask.shape:
        raise ValueError(f"sample: mask {truth.shape} and image {found.mask.shape} of "
                         f"{sample.key} differ in size")
    return Scored(sample, found, truth, dice_iou(found.mask, truth)[0])


def _figures(scored: Sequence[Scored], bootstrap: int) -> dict[str, Any]:
    positive = np.array([s.truth.any() for s in scored])
    dice = np.array([s.dice for s in scored])
    probability = np.array([s.detection.probability for s in scored])
    present = np.array([s.detection.present for s in scored])
    rng = np.random.default_rng(0)
    return {
        "n_images": len(scored), "n_positive": int(positive.sum()),
        "n_negative": int((~positive).sum()),
        "dice_positive": mean_with_ci(dice[positive], rng, bootstrap),
        "kaggle_mean_dice": mean_with_ci(dice, rng, bootstrap),
        "detection_auc": auc_with_ci(probability[positive], probability[~positive], rng,
                                      bootstrap),
        "sensitivity": rate(present[positive]),
        "specificity": rate(~present[~positive]),
        "mask_quality": pneumothorax_quality_figures(
            [(s.detection.agreement if s.detection.present else None, s.dice)
             for s in scored if s.truth.any()], bootstrap),
        "per_image": [{"key": s.sample.key, "source": s.sample.source,
                       "positive": bool(s.truth.any()), "dice": round(s.dice, 4),
                       "probability": round(s.detection.probability, 4),
                       "present": s.detection.present} for s in scored],
    }


def source_check(detector: PneumothoraxDetector, samples: Sequence[SegSample],
                 lung: Segmenter | None, bootstrap: int = 2000) -> dict[str, Any]:
    """Does the model score SIIM-looking images as positive because of their source?

    On images never trained on:

    1. SIIM negatives vs NIH negatives, image-level probability;
    2. with a lung model, the *healthy* lung of SIIM positives vs NIH lungs, highest pixel
       probability inside the lung;
    3. each NIH negative scored as it is and re-encoded the SIIM way
       (:func:`siim_style`): the same anatomy through both pipelines, so any change is
       the pipeline's alone.

    A model that learned the source scores the SIIM side higher (AUC well above 0.5).
    """
    unseen = [s for s in samples if s.split != "train"]
    groups: dict[str, list[float]] = {"siim_negative": [], "nih_negative": [],
                                      "siim_healthy_lung": [], "nih_lung": [],
                                      "nih_negative_siim_style": []}
    present = dict.fromkeys(("siim_negative", "nih_negative", "nih_negative_siim_style",
                             "siim_healthy_lung", "nih_lung"), 0)
    for sample in tqdm(unseen, desc="source check", unit="image"):
        siim, positive = sample.source.startswith("siim"), is_positive(sample)
        if not siim and (positive or sample.source != "nih_normal"):
            continue  # the NIH side is the 'No Finding' images, as in every card
        radiograph = read_radiograph(sample.image)
        found, lungs = detect(detector, lung, radiograph.pixels, radiograph.spacing)
        if not positive:
            group = "siim_negative" if siim else "nih_negative"
            groups[group].append(found.probability)
            present[group] += int(found.present)
        if not positive and not siim:
            again, _ = detect(detector, lung, siim_style(radiograph.pixels),
                              radiograph.spacing)
            groups["nih_negative_siim_style"].append(again.probability)
            present["nih_negative_siim_style"] += int(again.present)
        if lung is not None:
            group = "siim_healthy_lung" if siim else "nih_lung"
            for score, reported in _lung_scores(lungs, radiograph.pixels.shape, found,
                                                read_mask(sample.masks[SEGMENT])):
                groups[group].append(score)
                present[group] += int(reported)
    rng = np.random.default_rng(1)
    result: dict[str, Any] = {name: _group_summary(v) for name, v in groups.items()}
    for name, count in present.items():
        result[name]["reported_present"] = count
    arrays = {name: np.array(v) for name, v in groups.items()}
    result["auc_siim_vs_nih_negative"] = auc_with_ci(
        arrays["siim_negative"], arrays["nih_negative"], rng, bootstrap)
    result["auc_siim_healthy_vs_nih_lung"] = auc_with_ci(
        arrays["siim_healthy_lung"], arrays["nih_lung"], rng, bootstrap)
    result["auc_siim_style_vs_as_is"] = auc_with_ci(
        arrays["nih_negative_siim_style"], arrays["nih_negative"], rng, bootstrap)
    change = arrays["nih_negative_siim_style"] - arrays["nih_negative"]
    result["siim_style_change"] = mean_with_ci(change, rng, bootstrap) | {
        "max_abs": round(float(np.abs(change).max()), 4) if change.size else None}
    result["reading"] = (
        "AUC near 0.5 means images without pneumothorax are scored alike whatever their "
        "source; the SIIM-negative group is tiny (no more than 3); the SIIM-style "
        "re-encoding pairs show what the encoding pipeline alone changes")
    return result


def nih_label_check(detector: PneumothoraxDetector, lung: Segmenter | None, data_root: Path,
                    bootstrap: int = 2000, *, trained: Set[Path] = frozenset()
                    ) -> dict[str, Any]:
    """Pneumothorax from the negatives' source: NIH images whose NIH labels include
    Pneumothorax (labels only, no masks, so never trained on) against the NIH images of
    the val and test splits without it ('No Finding', and Pneumonia without
    Pneumothorax). A model that had learned "SIIM means pneumothorax" would score the
    NIH pneumothorax images like the NIH negatives (AUC near 0.5).

    With ``nih_cxr14_multilabel`` present, ``nih_transfer`` adds its images too
    (:func:`nih_transfer`). Images in ``trained`` (the model's training images, e.g. NIH
    image-level positives) are left out of every group.
    """
    scored = _nih_scores(detector, lung, data_root, trained)
    first = [s for s in scored if s.dataset == NIH_SET]
    groups: dict[str, list[NihScore]] = {
        "nih_labelled_pneumothorax": [s for s in first if s.group == "pneumothorax"],
        "nih_unseen_normal": [s for s in first if s.group == "normal"],
        "nih_unseen_pneumonia": [s for s in first if s.group == "other_abnormal"]}
    rng = np.random.default_rng(2)
    result: dict[str, Any] = {
        name: _group_summary([s.probability for s in v])
        | {"reported_present": sum(s.present for s in v)} for name, v in groups.items()}
    arrays = {name: np.array([s.probability for s in v]) for name, v in groups.items()}
    for other in ("nih_unseen_normal", "nih_unseen_pneumonia"):
        result[f"auc_nih_pneumothorax_vs_{other.removeprefix('nih_unseen_')}"] = auc_with_ci(
            arrays["nih_labelled_pneumothorax"], arrays[other], rng, bootstrap)
    if any(s.dataset == NIH_MULTILABEL_SET for s in scored):
        result["nih_transfer"] = nih_transfer(scored, bootstrap)
    return result


@dataclass(frozen=True)
class NihScore:
    """One NIH image the pneumothorax model never trained on, as the engine scored it."""

    dataset: str
    group: str
    """``pneumothorax`` (NIH label), ``normal`` ('No Finding') or ``other_abnormal``."""
    probability: float
    present: bool


UNSEEN_NIH = (f"{NIH_MULTILABEL_SET}: every image (patient-disjoint from the other NIH "
              f"sets, never used by the pneumothorax model); {NIH_SET}: every image "
              "labelled Pneumothorax (never a negative) and the val and test images "
              "without it (train-split normals and pneumonia images were negatives); "
              "any image the model trained on (e.g. its NIH image-level positives and "
              "negatives) is left out")


def _nih_scores(detector: PneumothoraxDetector, lung: Segmenter | None,
                data_root: Path, trained: Set[Path]) -> list[NihScore]:
    """The engine's score and decision on every unseen NIH image (:data:`UNSEEN_NIH`,
    less the ``trained`` ones)."""
    rows: list[tuple[str, Path, str]] = []
    for row in read_manifest(data_root / NIH_SET):
        if "Pneumothorax" in row["label_findings"].split("|"):
            rows.append((NIH_SET, data_root / NIH_SET / row["image"], "pneumothorax"))
        elif row["split"] != "train":  # NIH train images may have been trained on
            rows.append((NIH_SET, data_root / NIH_SET / row["image"],
                         "normal" if row["label_normal_abnormal"] == "normal"
                         else "other_abnormal"))
    multilabel = data_root / NIH_MULTILABEL_SET
    for row in read_manifest(multilabel) if (multilabel / "manifest.csv").is_file() else []:
        group = ("pneumothorax" if row["label_pneumothorax"] == "1" else "normal"
                 if row["label_normal_abnormal"] == "normal" else "other_abnormal")
        rows.append((NIH_MULTILABEL_SET, multilabel / row["image"], group))
    scored = []
    rows = [row for row in rows if row[1] not in trained]
    for dataset, path, group in tqdm(rows, desc="NIH label check", unit="image"):
        radiograph = read_radiograph(path)
        found, _ = detect(detector, lung, radiograph.pixels, radiograph.spacing)
        scored.append(NihScore(dataset, group, found.probability, found.present))
    return scored


def nih_transfer(scored: Sequence[NihScore], bootstrap: int = 2000) -> dict[str, Any]:
    """Does the detector find pneumothorax on NIH images (another pipeline than SIIM)?

    Every unseen NIH image labelled Pneumothorax against unseen NIH 'No Finding' images
    and against unseen NIH images with other findings: AUC of the image-level
    probability with a bootstrap 95 % interval, and sensitivity and specificity of the
    engine's decision (the operating point); pooled, and for ``nih_cxr14_multilabel``
    alone (mostly PA, normals too, so the view is no shortcut there).
    """
    rng = np.random.default_rng(3)
    result: dict[str, Any] = {"unseen": UNSEEN_NIH,
                              "labels": "NIH labels mined from reports (noisy), no masks"}
    for name, subset in (("pooled", scored),
                         ("multilabel", [s for s in scored if s.dataset == NIH_MULTILABEL_SET])):
        by_group = {g: [s for s in subset if s.group == g]
                    for g in ("pneumothorax", "normal", "other_abnormal")}
        probability = {g: np.array([s.probability for s in v]) for g, v in by_group.items()}
        present = {g: np.array([s.present for s in v], dtype=bool) for g, v in by_group.items()}
        result[name] = {
            "auc_vs_normal": auc_with_ci(probability["pneumothorax"], probability["normal"],
                                         rng, bootstrap),
            "auc_vs_other_abnormal": auc_with_ci(probability["pneumothorax"],
                                                 probability["other_abnormal"], rng, bootstrap),
            "sensitivity": rate(present["pneumothorax"]),
            "specificity_normal": rate(~present["normal"]),
            "specificity_other_abnormal": rate(~present["other_abnormal"])}
    return result


def size_check(detector: PneumothoraxDetector, lung: Segmenter,
               samples: Sequence[SegSample], bootstrap: int = 2000) -> dict[str, Any]:
    """% of hemithorax as the engine reports it against the SIIM-ACR masks.

    On every SIIM positive: the truth is the masked pneumothorax's share of its side's
    hemithorax (:data:`~cxr_core.pneumothorax_size.HEMITHORAX_DEFINITION`, the lung
    model's lung: SIIM has no lung masks); the engine's % comes from the predicted mask
    (``engine``, on detected cases) and, to isolate the formula from the segmentation,
    from the true mask (``formula_on_truth``). Errors are reported % minus true %.
    """
    rows = []
    for sample in [s for s in samples if s.source.startswith("siim") and is_positive(s)]:
        radiograph = read_radiograph(sample.image)
        found, lungs = detect(detector, lung, radiograph.pixels, radiograph.spacing)
        truth = read_mask(sample.masks[SEGMENT])
        segments = {name: make_segment(name, mask, radiograph.spacing)
                    for name, mask in lungs.items()}
        sides = split_by_side(truth, segments)
        side = max(sides, key=lambda k: int(sides[k].sum()))
        if f"{side}_lung" not in segments:
            continue
        true = hemithorax_percent(sides[side], lungs[f"{side}_lung"])
        rows.append({"key": sample.key, "split": sample.split, "side": side,
                     "truth": round(true, 1),
                     "engine": _side_percent(found.mask, segments, radiograph.spacing, side),
                     "formula_on_truth": _side_percent(truth, segments, radiograph.spacing,
                                                       side)})
    rng = np.random.default_rng(4)
    result: dict[str, Any] = {
        "definition": f"truth = masked pneumothorax / hemithorax on its side; "
                      f"{HEMITHORAX_DEFINITION}; error = reported - truth, in points",
        "trained_on": "the train-split SIIM positives were trained on and the val ones "
                      "chose the checkpoint: 'test' is the figure to quote"}
    for name, chosen in (("test", [r for r in rows if r["split"] == "test"]),
                         ("all_positives", rows)):
        result[name] = {"n": len(chosen)} | {
            how: _errors(chosen, how, rng, bootstrap) for how in ("engine", "formula_on_truth")}
    result["per_image"] = rows
    return result


def _side_percent(mask: np.ndarray, segments: dict[str, Segment], spacing: PixelSpacing,
                  side: str) -> float | None:
    """The engine's % of hemithorax on ``side`` for ``mask``; None when not reported."""
    wanted = f"pneumothorax_{side}_hemithorax_percent"
    return next((m.value for m in side_measurements(mask, segments, spacing)
                 if m.name == wanted), None)


def _errors(rows: Sequence[dict[str, Any]], how: str, rng: np.random.Generator,
            bootstrap: int) -> dict[str, Any]:
    """Signed and absolute error of ``how`` against the truth, on the rows it reported."""
    reported = [r for r in rows if r[how] is not None]
    error = np.array([r[how] - r["truth"] for r in reported], dtype=float)
    return {"n_reported": len(reported), "n_missed": len(rows) - len(reported),
            "signed_error": mean_with_ci(error, rng, bootstrap),
            "absolute_error": mean_with_ci(np.abs(error), rng, bootstrap),
            "within_10_points": int((np.abs(error) <= 10).sum())}


def _group_summary(values: list[float]) -> dict[str, Any]:
    """Count and mean, with the values themselves when few, else their quartiles."""
    listed = values if len(values) <= 10 else list(np.percentile(values, (25, 50, 75)))
    return {"n": len(values), "mean": round(float(np.mean(values)), 4) if values else None,
            "values" if len(values) <= 10 else "quartiles":
            [round(float(x), 4) for x in listed]}


def siim_style(pixels: np.ndarray, *, size: int = 1024,
               quality: int = SIIM_JPEG_QUALITY) -> np.ndarray:
    """Send an 8-bit image through the SIIM-ACR pipeline: Lanczos to ``size`` px (the
    1024 NIH PNG), JPEG baseline at ``quality`` (the SIIM DICOM frame), decoded and
    Lanczos back to the input size (as the shared SIIM PNGs were made)."""
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("pixels: siim_style takes 8-bit images (values 0..255), got "
                         f"{pixels.min():g}..{pixels.max():g}")
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    encoded = io.BytesIO()
    image.resize((size, size), Image.Resampling.LANCZOS).save(encoded, format="JPEG",
                                                              quality=quality)
    encoded.seek(0)
    decoded = Image.open(encoded).resize(image.size, Image.Resampling.LANCZOS)
    return np.asarray(decoded, dtype=np.float32)


def _lung_scores(lungs: dict[str, np.ndarray], shape: tuple[int, ...], found: Detection,
                 truth: np.ndarray) -> list[tuple[float, bool]]:
    """For each lung with no true pneumothorax: the highest pneumothorax probability inside
    it, and whether a reported pneumothorax (``found.mask``) overlaps it."""
    probabilities = torch.from_numpy(found.probabilities)[None, None]
    full = torch.nn.functional.interpolate(probabilities, size=shape, mode="bilinear",
                                           align_corners=False)[0, 0].numpy()
    truth_sides = split_by_side(truth, {}, mirrored=False) if truth.any() else {}
    scores = []
    for side in SIDES:
        lung_mask = lungs.get(f"{side}_lung")
        if lung_mask is None or not lung_mask.any():
            continue
        if side in truth_sides and truth_sides[side].any():
            continue
        scores.append((float(full[lung_mask].max()), bool((found.mask & lung_mask).any())))
    return scores


def _montage(scored: Sequence[Scored], path: Path, count: int = 6) -> None:
    chosen = [s for s in scored if s.truth.any()][:count - 2]
    chosen += sorted((s for s in scored if not s.truth.any()),
                     key=lambda s: -s.detection.probability)[:count - len(chosen)]
    if not chosen:
        return
    color = {SEGMENT: SEGMENT_TYPES[SEGMENT].rgb}
    rows, labels = [], []
    for item in chosen:
        image = read_radiograph(item.sample.image).pixels
        rows.append([image, overlay_rgb(image, {SEGMENT: item.truth}, color),
                     overlay_rgb(image, {SEGMENT: item.detection.mask}, color)])
        labels.append(f"{item.sample.source} p={item.detection.probability:.2f} "
                      f"Dice={item.dice:.2f}")
    save_montage(rows, ["image", "truth", "prediction"], path, labels)
