"""``cxr train pneumothorax`` / ``cxr evaluate pneumothorax``.

Sources of labelled images (any mix):

- the shared set: SIIM-ACR positives with masks (``pneumothorax_siim_github``) and NIH
  "No Finding" images as negatives (``nih_cxr14_normal_pneumonia``);
- the SIIM-ACR layout: a folder of DICOM files plus the RLE CSV;
- a folder of ``images/`` + ``masks/`` PNGs (an all-zero mask marks a negative);
- a MONAI datalist / the SlicerCXR label store (``--datalist``).

Negatives are given a known-empty mask, so the loss (BCE + focal Dice, Dice also on
empty targets) penalises false positives on them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from PIL import Image
from scipy.stats import rankdata
from tqdm import tqdm

from cxr_core.io import read_radiograph
from cxr_core.models import ModelCard
from cxr_core.models.card import load_model, save_model
from cxr_core.pneumothorax import (
    DEFAULT_MIN_AREA_FRACTION,
    DEFAULT_MIN_AREA_MM2,
    DEFAULT_THORAX_MARGIN,
    DEFAULT_THORAX_MIN_INSIDE,
    SEGMENT,
    SIDES,
    Detection,
    PneumothoraxDetector,
    both_lungs,
    split_by_side,
)
from cxr_core.radiograph import PixelSpacing
from cxr_core.segmentation import MIN_COMPONENT, Segmenter
from cxr_core.segments import SEGMENT_TYPES
from cxr_core.training.augment import Chain, LesionSwap, RandomAffineIntensity
from cxr_core.training.data import (
    SegSample,
    datalist_samples,
    folder_samples,
    load_tensors,
    read_mask,
)
from cxr_core.training.losses import MaskedBceDiceLoss
from cxr_core.training.lung import dice_iou, git_commit
from cxr_core.training.plots import overlay_rgb, plot_curves, save_montage
from cxr_core.training.rle import SIIM_SHAPE, decode_union, read_rle_table
from cxr_core.training.segtrain import SegTrainConfig, TensorSet, train_segmentation

log = logging.getLogger(__name__)

STRUCTURES = (SEGMENT,)
PTX_NETWORK = {
    "spatial_dims": 2, "in_channels": 1, "out_channels": 1,
    "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 1,
}
SIIM_SET = "pneumothorax_siim_github"
NIH_SET = "nih_cxr14_normal_pneumonia"
SOURCE_CHECK = "source_check"
"""Split of samples kept out of training to test whether the model learned the source."""
SIIM_JPEG_QUALITY = 92
"""The SIIM-ACR DICOMs carry JPEG baseline frames with the IJG quality-92 table (read off
``dicom_samples/siim_*.dcm``); they were made from the 1024-px NIH PNGs."""
# Specks below 0.1 % of the image are noise at 256 px; the minimum-area rule comes after.
MIN_COMPONENT_FRACTION = 0.001


# ----------------------------------------------------------------------------- sources
def hash_split(key: str, namespace: str) -> str:
    """The shared sets' split rule: SHA-256 of ``cxr-2025:<namespace>:<key>``, first
    8 hex digits / 2^32, cut at 0.70 and 0.85."""
    value = int(hashlib.sha256(f"cxr-2025:{namespace}:{key}".encode()).hexdigest()[:8], 16)
    fraction = value / 2**32
    return "train" if fraction < 0.70 else "val" if fraction < 0.85 else "test"


class MaskFiles:
    """Writes masks that exist only in memory (RLE, known-empty) as PNGs for the loaders.

    Files are named by content (shape, or a hash of the mask), so the folder works as a
    cache shared by runs and processes; each file is written once, atomically.

    Parameters
    ----------
    folder:
        Where the PNGs go (default: ``<temp dir>/cxr_pneumothorax_masks``).
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder or Path(tempfile.gettempdir()) / "cxr_pneumothorax_masks")
        self.folder.mkdir(parents=True, exist_ok=True)

    def empty(self, shape: tuple[int, int]) -> Path:
        return self._save(f"empty_{shape[0]}x{shape[1]}", np.zeros(shape, dtype=bool))

    def write(self, key: str, mask: np.ndarray) -> Path:
        if not mask.any():
            return self.empty(mask.shape)
        digest = hashlib.sha256(np.packbits(mask).tobytes() + str(mask.shape).encode()
                                ).hexdigest()[:16]
        return self._save(f"{key}_{digest}", mask)

    def _save(self, stem: str, mask: np.ndarray) -> Path:
        path = self.folder / f"{stem}.png"
        if not path.is_file():
            # a unique temporary name, then rename: concurrent runs never see half a file
            handle, temporary = tempfile.mkstemp(suffix=".png", dir=self.folder)
            with open(handle, "wb") as stream:
                Image.fromarray(mask.astype(np.uint8) * 255).save(stream, format="PNG")
            Path(temporary).replace(path)
        return path


def _manifest(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def shared_samples(data_root: Path, masks: MaskFiles, *, nih_negatives: int,
                   nih_pneumonia_negatives: int = 0,
                   hold_out_siim_negatives: bool = True) -> list[SegSample]:
    """SIIM positives (and negatives) plus, per split, up to ``nih_negatives`` NIH
    normals and ``nih_pneumonia_negatives`` NIH pneumonia images whose NIH labels do not
    include Pneumothorax (sick chests: lines, drains, opacities without pneumothorax).

    NIH images are taken in a fixed hash order. SIIM negatives go to the
    ``source_check`` split when ``hold_out_siim_negatives``: they are the only negatives
    from the SIIM pipeline, so they are kept unseen to test whether the model scores a
    SIIM-looking image as positive.
    """
    samples = []
    siim_root, nih_root = data_root / SIIM_SET, data_root / NIH_SET
    for row in _manifest(siim_root):
        negative = row["label_pneumothorax"] == "0"
        split = SOURCE_CHECK if negative and hold_out_siim_negatives else row["split"]
        samples.append(SegSample(image=siim_root / row["image"],
                                 masks={SEGMENT: siim_root / row["mask_pneumothorax"]},
                                 split=split, source="siim", key=row["source_id"]))
    rows = _manifest(nih_root)
    normals = [r for r in rows if r["label_normal_abnormal"] == "normal"]
    pneumonia = [r for r in rows if r["label_normal_abnormal"] == "abnormal"
                 and "Pneumothorax" not in r["label_findings"].split("|")]
    samples += _nih_negatives(nih_root, normals, nih_negatives, "nih_normal", masks)
    samples += _nih_negatives(nih_root, pneumonia, nih_pneumonia_negatives, "nih_pneumonia",
                              masks)
    return samples


def _nih_negatives(root: Path, rows: list[dict[str, str]], per_split: int, source: str,
                   masks: MaskFiles) -> list[SegSample]:
    """Up to ``per_split`` rows per split, in a fixed hash order, with known-empty masks."""
    taken: dict[str, int] = {}
    samples = []
    for row in sorted(rows, key=lambda r: hashlib.sha256(r["image"].encode()).hexdigest()):
        if taken.get(row["split"], 0) >= per_split:
            continue
        taken[row["split"]] = taken.get(row["split"], 0) + 1
        shape = (int(row["resized_height"]), int(row["resized_width"]))
        samples.append(SegSample(image=root / row["image"], masks={SEGMENT: masks.empty(shape)},
                                 split=row["split"], source=source, key=row["source_id"]))
    return samples


def siim_samples(dicom_dir: Path, rle_csv: Path, masks: MaskFiles) -> list[SegSample]:
    """The SIIM-ACR layout: ``*.dcm`` anywhere under ``dicom_dir``, masks from the RLE CSV
    joined on SOPInstanceUID; split by hash of PatientID (SIIM ids are per patient)."""
    table = read_rle_table(rle_csv)
    samples, unmatched = [], 0
    for path in sorted(Path(dicom_dir).rglob("*.dcm")):
        header = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["SOPInstanceUID", "PatientID", "Rows", "Columns"])
        image_id = str(header.SOPInstanceUID)
        if image_id not in table:
            unmatched += 1
            continue
        shape = (int(header.Rows), int(header.Columns))
        if shape != SIIM_SHAPE:
            raise ValueError(f"dicom_dir: {path.name} is {shape[0]}x{shape[1]}; SIIM RLE "
                             f"is defined on {SIIM_SHAPE[0]}x{SIIM_SHAPE[1]}")
        mask = decode_union(table[image_id], shape)
        samples.append(SegSample(image=path, masks={SEGMENT: masks.write(image_id, mask)},
                                 split=hash_split(str(header.get("PatientID") or image_id),
                                                  "siim"),
                                 source="siim_dicom", key=image_id))
    if unmatched:
        log.warning("%d DICOM files under %s have no row in %s", unmatched, dicom_dir, rle_csv)
    return samples


def png_folder_samples(root: Path) -> list[SegSample]:
    """``root/images/*.png`` + ``root/masks/<stem>.png``; split by hash of the stem."""
    samples = [s for s in folder_samples(Path(root), STRUCTURES) if s.masks]
    for sample in samples:
        sample.split = hash_split(sample.key, "folder")
    return samples


@dataclass
class Sources:
    """What to train or evaluate on; empty fields are not used."""

    data_root: Path | None = None
    nih_negatives: int = 150
    nih_pneumonia_negatives: int = 0
    hold_out_siim_negatives: bool = True
    siim_dicom: Path | None = None
    siim_csv: Path | None = None
    folders: list[Path] = field(default_factory=list)
    datalists: list[Path] = field(default_factory=list)

    def samples(self, masks: MaskFiles) -> list[SegSample]:
        if (self.siim_dicom is None) != (self.siim_csv is None):
            raise ValueError("siim_dicom: the SIIM layout needs both the DICOM folder and "
                             "the RLE CSV")
        samples = []
        if self.data_root is not None:
            samples += shared_samples(
                self.data_root, masks, nih_negatives=self.nih_negatives,
                nih_pneumonia_negatives=self.nih_pneumonia_negatives,
                hold_out_siim_negatives=self.hold_out_siim_negatives)
        if self.siim_dicom is not None:
            samples += siim_samples(self.siim_dicom, self.siim_csv, masks)  # type: ignore[arg-type]
        for folder in self.folders:
            samples += png_folder_samples(folder)
        for datalist in self.datalists:
            samples += [s for s in datalist_samples(datalist, STRUCTURES) if s.masks]
        if not samples:
            raise ValueError("sources: no labelled pneumothorax images were found")
        return samples

    def describe(self) -> list[str]:
        described = []
        if self.data_root is not None:
            described += [f"../shared/data/{SIIM_SET} (see its SOURCE.md; SIIM RLE table: "
                          "../shared/data/label_tables/SOURCE.md)",
                          f"../shared/data/{NIH_SET} (see its SOURCE.md): 'No Finding' "
                          f"images as negatives, at most {self.nih_negatives} per split"
                          + (f"; Pneumonia images without a Pneumothorax label as negatives, "
                             f"at most {self.nih_pneumonia_negatives} per split"
                             if self.nih_pneumonia_negatives else "")]
        if self.siim_dicom is not None:
            described.append(f"SIIM layout: {self.siim_dicom} + {self.siim_csv}")
        described += [f"PNG folder: {f}" for f in self.folders]
        described += [f"datalist: {d}" for d in self.datalists]
        return described


def is_positive(sample: SegSample) -> bool:
    return bool(read_mask(sample.masks[SEGMENT]).any())


# ---------------------------------------------------------------------------- training
@dataclass
class PtxTrainOptions:
    size: int = 256
    init_from: str | Path | None = None
    """A model (e.g. ``lung_seg``) whose matching layers start the network."""
    positive_zoom: float = 0.5
    detail: float = 1.0
    """Blur/sharpen jitter: SIIM PNGs are sharper than NIH PNGs (source cue)."""
    positive_share: float = 0.5
    """Share of drawn training samples that are positive (the weighted sampler)."""
    swap: float = 0.5
    """Probability that a drawn image has a lesion region moved in or covered
    (:class:`LesionSwap`): with ``positive_share`` 0.5 and ``swap`` 0.5, an image's source
    says nothing about its label (0 = off)."""
    min_area_mm2: float = DEFAULT_MIN_AREA_MM2
    min_area_fraction: float = DEFAULT_MIN_AREA_FRACTION
    version: str = "1.0.0"
    lung_model: str | Path | None = "lung_seg"
    """Lung model for the healthy-lung source check in the final evaluation (None: skip)."""


def train_pneumothorax(*, sources: Sources, out_dir: Path, command: str,
                       config: SegTrainConfig, options: PtxTrainOptions) -> ModelCard:
    """Train, pick the best epoch on val, evaluate on test, save weights + card + figures."""
    masks = MaskFiles()
    samples = sources.samples(masks)
    by_split = {s: [x for x in samples if x.split == s] for s in ("train", "val", "test")}
    counts = _counts(samples)
    log.info("samples: %s", counts)
    if not by_split["train"] or not by_split["val"]:
        raise ValueError(f"sources: need train and val images, got {counts}")
    grid = (options.size, options.size)
    train_set = TensorSet(*load_tensors(by_split["train"], STRUCTURES, grid))
    val_set = TensorSet(*load_tensors(by_split["val"], STRUCTURES, grid))
    config.sample_weights = _balanced_weights(train_set.targets, options.positive_share)
    config.loss = MaskedBceDiceLoss(focal_gamma=2.0, empty_dice=True)
    config.augment = Chain(
        _lesion_swap(train_set, options.swap),
        RandomAffineIntensity(positive_zoom=options.positive_zoom, detail=options.detail))
    config.score = balanced_score
    network, parent = _initial_network(options.init_from)
    started = time.monotonic()
    network, history = train_segmentation(network, train_set, val_set, config)
    card = _card(options, command, config, sources, counts, history, parent,
                 minutes=(time.monotonic() - started) / 60)
    save_model(network, card, out_dir)
    plot_training(history, out_dir)
    detector = PneumothoraxDetector(Segmenter(network, card))
    lung = Segmenter.load(options.lung_model) if options.lung_model else None
    card.metrics = evaluate_pneumothorax(detector, samples, out_dir, split="test", lung=lung,
                                         data_root=sources.data_root)
    card.extra["limits"] = limits_statement(counts, card.metrics)
    save_model(network, card, out_dir)
    return card


def plot_training(history: Sequence[dict[str, float]], out_dir: Path) -> None:
    """Loss and val Dice (empty-empty = 1), and loss and the selection score."""
    plot_curves(history, STRUCTURES, out_dir / "training_curves.png")
    scored = [h | {"val_score_0": h["val_score"]} for h in history]
    plot_curves(scored, ["(Dice on positives + negatives left empty) / 2"],
                out_dir / "training_selection_score.png", metric="score")


def _counts(samples: Sequence[SegSample]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for sample in samples:
        label = "positive" if is_positive(sample) else "negative"
        bucket = counts.setdefault(sample.split, {})
        bucket[f"{sample.source}_{label}"] = bucket.get(f"{sample.source}_{label}", 0) + 1
    return counts


def _lesion_swap(train_set: TensorSet, probability: float) -> LesionSwap:
    """Lesions of the training positives move into training negatives and back."""
    positive = train_set.targets.flatten(1).amax(dim=1) > 0.5
    return LesionSwap(positives=train_set.images[positive],
                      positive_targets=train_set.targets[positive],
                      negatives=train_set.images[~positive],
                      to_positive=probability, to_negative=probability)


def _balanced_weights(targets: torch.Tensor, positive_share: float) -> torch.Tensor:
    """Drawing weights giving positives ``positive_share`` of the draws."""
    if not 0 < positive_share < 1:
        raise ValueError(f"positive_share: must be in (0, 1), got {positive_share}")
    positive = targets.flatten(1).amax(dim=1) > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return torch.ones(len(targets))
    return torch.where(positive, positive_share / n_pos, (1 - positive_share) / n_neg)


def balanced_score(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> float:
    """Model selection: mean of (Dice on positives) and (share of negatives left empty).

    Mean Dice with empty-empty = 1 would crown a model that never predicts anything when
    most val images are negative.
    """
    del known  # every pneumothorax sample here has a known (possibly empty) mask
    predicted, truth = logits[:, 0] > 0, targets[:, 0] > 0.5
    positive = truth.flatten(1).any(dim=1)
    overlap = (predicted & truth).flatten(1).sum(dim=1).float()
    total = (predicted.flatten(1).sum(dim=1) + truth.flatten(1).sum(dim=1)).float()
    dice = (2 * overlap / total.clamp(min=1))[positive]
    area = predicted.flatten(1).float().mean(dim=1)[~positive]
    parts = []
    if dice.numel():
        parts.append(float(dice.mean()))
    if area.numel():
        parts.append(float((area < DEFAULT_MIN_AREA_FRACTION).float().mean()))
    return sum(parts) / len(parts)


def _initial_network(init_from: str | Path | None) -> tuple[torch.nn.Module, str | None]:
    """A fresh UNet, or one whose layers of matching shape come from ``init_from``
    (e.g. the lung model: it already knows where the chest wall and apices are)."""
    network = ModelCard("", "", "", "UNet", PTX_NETWORK, (0, 0), []).build()
    if init_from is None:
        return network, None
    source, card = load_model(init_from)
    own = network.state_dict()
    matching = {k: v for k, v in source.state_dict().items()
                if k in own and own[k].shape == v.shape}
    network.load_state_dict(matching, strict=False)
    log.info("initialised %d of %d tensors from %s", len(matching), len(own), card.identifier)
    return network, card.identifier


def _card(options: PtxTrainOptions, command: str, config: SegTrainConfig, sources: Sources,
          counts: dict, history: list[dict[str, float]], parent: str | None,
          minutes: float) -> ModelCard:
    return ModelCard(
        name="pneumothorax", version=options.version, task="segmentation",
        architecture="UNet", network_kwargs=PTX_NETWORK,
        input_size=(options.size, options.size), labels=list(STRUCTURES),
        training={
            "command": command, "commit": git_commit(), "parent_model": parent,
            "datasets": sources.describe(), "counts": counts,
            "selection": "SIIM-ACR positives with masks; NIH 'No Finding' images"
            + (" and NIH Pneumonia images without a Pneumothorax label"
               if sources.nih_pneumonia_negatives else "")
            + " as negatives (known-empty masks)" + (
                "; the 3 SIIM negatives are held out (split 'source_check') to test "
                "whether the model learned the image source" if
                sources.hold_out_siim_negatives and sources.data_root else ""),
            "loss": "BCE with focal weighting (gamma 2) + soft Dice, Dice also on empty "
            "targets",
            "sampler": f"weighted: {options.positive_share:.0%} of draws positive",
            "augmentation": "rotation/scale/shift, gamma/contrast/noise, no flips; "
            f"positives zoomed about the lesion with probability {options.positive_zoom}; "
            f"blur/sharpen jitter +-{options.detail} (SIIM PNGs are sharper than NIH PNGs); "
            f"lesion swap with probability {options.swap}: a negative gets a training "
            "positive's lesion region (and its mask), a positive gets its lesion region "
            "covered by a negative's (and an empty mask), so the image source does not "
            "predict the label",
            "model_selection": "best val mean of (Dice on positives, share of negatives "
            "predicted empty); early stopping",
            "nih_negatives_per_split": sources.nih_negatives,
            "nih_pneumonia_negatives_per_split": sources.nih_pneumonia_negatives,
            "epochs_run": len(history), "minutes": round(minutes, 1), "seed": config.seed,
            "batch_size": config.batch_size, "learning_rate": config.learning_rate,
            "history": history,
        },
        extra={
            "postprocess": MIN_COMPONENT, "min_component_fraction": MIN_COMPONENT_FRACTION,
            "min_area_mm2": options.min_area_mm2,
            "min_area_fraction": options.min_area_fraction,
            "thorax_margin_fraction": DEFAULT_THORAX_MARGIN,
            "thorax_min_inside": DEFAULT_THORAX_MIN_INSIDE,
            "segments": {SEGMENT: SEGMENT_TYPES[SEGMENT].label},
        },
    )


def limits_statement(counts: dict[str, dict[str, int]], metrics: dict[str, Any]) -> str:
    """The card's plain statement of training size, test size and the source check,
    written from the figures so it cannot drift from them."""
    train, check = counts.get("train", {}), metrics.get("source_check", {})
    positives = sum(v for k, v in train.items() if k.endswith("_positive"))
    negatives = sum(v for k, v in train.items() if k.endswith("_negative"))
    breakdown = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(train.items()))
    tested = (f"Tested on {metrics['n_positive']} positive and {metrics['n_negative']} "
              "negative images")
    parts = [f"Trained on {positives} images with pneumothorax and {negatives} without "
             f"({breakdown}).",
             tested + (", so every figure has a wide interval." if metrics["n_positive"] < 30
                       else ".")]
    if "auc_siim_vs_nih_negative" in check:
        parts.append(_source_sentence(check))
    parts += _source_reading(check)
    sick, labelled = check.get("nih_unseen_pneumonia"), check.get("nih_labelled_pneumothorax")
    if sick and sick["n"] and labelled and labelled["n"]:
        parts.append(f"On NIH images a region is reported in {labelled['reported_present']} "
                     f"of {labelled['n']} labelled pneumothorax (NIH labels mined "
                     f"from reports, no masks) and in {sick['reported_present']} of {sick['n']} "
                     "unseen pneumonia images without that label.")
    parts.append("Research use only; not for clinical diagnosis. Retrain on local data "
                 "with `cxr train pneumothorax`.")
    return " ".join(parts)


def _source_sentence(check: dict[str, Any]) -> str:
    compared = (
        ("the SIIM negatives vs NIH negatives", "auc_siim_vs_nih_negative"),
        ("healthy lungs of SIIM images vs NIH lungs", "auc_siim_healthy_vs_nih_lung"),
        ("NIH negatives re-encoded the SIIM way vs as they are", "auc_siim_style_vs_as_is"),
        ("NIH images labelled pneumothorax (never trained on) vs NIH 'No Finding' images",
         "auc_nih_pneumothorax_vs_normal"),
    )
    return ("Source check on images never trained on: "
            + "; ".join(_verdict(what, check.get(name, {})) for what, name in compared) + ".")


def _source_reading(check: dict[str, Any]) -> list[str]:
    """What the source checks together say, in words."""
    def above_half(name: str) -> bool | None:
        entry = check.get(name) or {}
        return None if entry.get("ci95") is None else entry["ci95"][0] > 0.5

    pipeline = above_half("auc_siim_style_vs_as_is")
    generalises = above_half("auc_nih_pneumothorax_vs_normal")
    healthy = above_half("auc_siim_healthy_vs_nih_lung")
    reading = []
    if pipeline:
        reading.append("The SIIM encoding pipeline alone raises the score: the model has "
                       "learned the image source.")
    if generalises is False:
        reading.append("Pneumothorax on NIH images is not found better than chance: the "
                       "figures may measure the image source, not the finding.")
    if healthy and not pipeline and generalises:
        siim, nih = check["siim_healthy_lung"], check["nih_lung"]
        lungs = (f"{siim['reported_present']} of {siim['n']} vs "
                 f"{nih['reported_present']} of {nih['n']}")
        more = siim["reported_present"] / siim["n"] > nih["reported_present"] / nih["n"]
        reading.append(
            "The encoding pipeline alone changes nothing and pneumothorax is found on NIH "
            "images too, so the source is not the model's shortcut; but lungs without "
            "pneumothorax in SIIM images still score higher than NIH lungs, which these "
            "data cannot separate from the patients (drains, subcutaneous air, operated "
            "chests). " + (
                f"At the operating point a region is reported in {lungs} lungs: expect "
                "more false positives in a pneumothorax population than the specificity "
                "on NIH negatives suggests." if more else
                f"The difference stays below the operating point: a region is reported in "
                f"{lungs} lungs."))
    elif healthy:
        reading.append("Lungs without pneumothorax in SIIM images score higher than NIH "
                       "lungs.")
    return reading


def _verdict(what: str, entry: dict[str, Any]) -> str:
    if entry.get("auc") is None:
        return f"{what}: not measured"
    low, high = entry["ci95"]
    reading = ("scored alike (the interval holds 0.5)" if low <= 0.5 <= high else
               "the first scored higher" if low > 0.5 else "the first scored lower")
    if min(entry["n_positive"], entry["n_negative"]) < 5:
        reading += ", too few images to decide"
    return (f"{what}: AUC {entry['auc']:.2f} [{low:.2f}-{high:.2f}], "
            f"n={entry['n_positive']}/{entry['n_negative']}, {reading}")


# --------------------------------------------------------------------------- evaluation
@dataclass
class Scored:
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
        metrics["source_check"] |= nih_label_check(detector, lung, data_root, bootstrap)
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
    """The detector as the engine runs it: with the lung model's lungs for its thorax
    gate when a lung model is given. Returns the detection and the lung masks."""
    lungs = lung(pixels).masks if lung is not None else {}
    return detector(pixels, spacing, lungs=both_lungs(lungs)), lungs


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
        "dice_positive": _summary(dice[positive], rng, bootstrap),
        "kaggle_mean_dice": _summary(dice, rng, bootstrap),
        "detection_auc": _auc_summary(probability[positive], probability[~positive], rng,
                                      bootstrap),
        "sensitivity": _rate(present[positive]),
        "specificity": _rate(~present[~positive]),
        "per_image": [{"key": s.sample.key, "source": s.sample.source,
                       "positive": bool(s.truth.any()), "dice": round(s.dice, 4),
                       "probability": round(s.detection.probability, 4),
                       "present": s.detection.present} for s in scored],
    }


def _rate(hits: np.ndarray) -> dict[str, Any]:
    return {"n": int(hits.size), "value": round(float(hits.mean()), 4) if hits.size else None}


def _summary(values: np.ndarray, rng: np.random.Generator, n: int) -> dict[str, Any]:
    if values.size == 0:
        return {"n": 0, "mean": None, "ci95": None}
    draws = rng.choice(values, size=(n, values.size), replace=True).mean(axis=1)
    return {"n": int(values.size), "mean": round(float(values.mean()), 4),
            "median": round(float(np.median(values)), 4),
            "ci95": [round(float(q), 4) for q in np.percentile(draws, (2.5, 97.5))]}


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count one half)."""
    ranks = rankdata(np.concatenate([positives, negatives]))
    n_pos, n_neg = positives.size, negatives.size
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auc_summary(positives: np.ndarray, negatives: np.ndarray, rng: np.random.Generator,
                 n: int) -> dict[str, Any]:
    """AUC with a stratified bootstrap interval (positives and negatives resampled apart)."""
    if positives.size == 0 or negatives.size == 0:
        return {"n_positive": int(positives.size), "n_negative": int(negatives.size),
                "auc": None, "ci95": None}
    draws = [auc(rng.choice(positives, positives.size), rng.choice(negatives, negatives.size))
             for _ in range(n)]
    return {"n_positive": int(positives.size), "n_negative": int(negatives.size),
            "auc": round(auc(positives, negatives), 4),
            "ci95": [round(float(q), 4) for q in np.percentile(draws, (2.5, 97.5))]}


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
    result["auc_siim_vs_nih_negative"] = _auc_summary(
        arrays["siim_negative"], arrays["nih_negative"], rng, bootstrap)
    result["auc_siim_healthy_vs_nih_lung"] = _auc_summary(
        arrays["siim_healthy_lung"], arrays["nih_lung"], rng, bootstrap)
    result["auc_siim_style_vs_as_is"] = _auc_summary(
        arrays["nih_negative_siim_style"], arrays["nih_negative"], rng, bootstrap)
    change = arrays["nih_negative_siim_style"] - arrays["nih_negative"]
    result["siim_style_change"] = _summary(change, rng, bootstrap) | {
        "max_abs": round(float(np.abs(change).max()), 4) if change.size else None}
    result["reading"] = (
        "AUC near 0.5 means images without pneumothorax are scored alike whatever their "
        "source; the SIIM-negative group is tiny (no more than 3); the SIIM-style "
        "re-encoding pairs show what the encoding pipeline alone changes")
    return result


def nih_label_check(detector: PneumothoraxDetector, lung: Segmenter | None, data_root: Path,
                    bootstrap: int = 2000) -> dict[str, Any]:
    """Pneumothorax from the negatives' source: NIH images whose NIH labels include
    Pneumothorax (labels only, no masks, so never trained on) against the NIH images of
    the val and test splits without it ('No Finding', and Pneumonia without
    Pneumothorax). A model that had learned "SIIM means pneumothorax" would score the
    NIH pneumothorax images like the NIH negatives (AUC near 0.5).
    """
    root = data_root / NIH_SET
    groups: dict[str, list[float]] = {"nih_labelled_pneumothorax": [],
                                      "nih_unseen_normal": [], "nih_unseen_pneumonia": []}
    present = dict.fromkeys(groups, 0)
    for row in tqdm(_manifest(root), desc="NIH label check", unit="image"):
        if "Pneumothorax" in row["label_findings"].split("|"):
            group = "nih_labelled_pneumothorax"
        elif row["split"] == "train":
            continue  # NIH 'No Finding' train images may have been trained on
        else:
            group = ("nih_unseen_normal" if row["label_normal_abnormal"] == "normal"
                     else "nih_unseen_pneumonia")
        radiograph = read_radiograph(root / row["image"])
        found, _ = detect(detector, lung, radiograph.pixels, radiograph.spacing)
        groups[group].append(found.probability)
        present[group] += int(found.present)
    rng = np.random.default_rng(2)
    result: dict[str, Any] = {name: _group_summary(v) | {"reported_present": present[name]}
                              for name, v in groups.items()}
    arrays = {name: np.array(v) for name, v in groups.items()}
    for other in ("nih_unseen_normal", "nih_unseen_pneumonia"):
        result[f"auc_nih_pneumothorax_vs_{other.removeprefix('nih_unseen_')}"] = _auc_summary(
            arrays["nih_labelled_pneumothorax"], arrays[other], rng, bootstrap)
    return result


def _group_summary(values: list[float]) -> dict[str, Any]:
    listed = values if len(values) <= 10 else np.percentile(values, (25, 50, 75))
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


def sources_from_args(data_root: Path | None, nih_negatives: int, keep_siim_negatives: bool,
                      siim_dicom: Path | None, siim_csv: Path | None,
                      folders: Iterable[Path], datalists: Iterable[Path],
                      nih_pneumonia_negatives: int = 0) -> Sources:
    return Sources(data_root=data_root, nih_negatives=nih_negatives,
                   nih_pneumonia_negatives=nih_pneumonia_negatives,
                   hold_out_siim_negatives=not keep_siim_negatives, siim_dicom=siim_dicom,
                   siim_csv=siim_csv, folders=list(folders), datalists=list(datalists))
