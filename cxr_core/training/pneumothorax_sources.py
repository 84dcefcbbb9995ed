"""Where labelled pneumothorax images come from (any mix):

- the shared set: SIIM-ACR positives with masks (``pneumothorax_siim_github``) and NIH
  "No Finding" (and optionally Pneumonia) images as negatives (``nih_cxr14_normal_pneumonia``);
- the SIIM-ACR layout: a folder of DICOM files plus the RLE CSV;
- a folder of ``images/`` + ``masks/`` PNGs (an all-zero mask marks a negative);
- a MONAI datalist / the SlicerCXR label store.

Negatives are given a known-empty mask, so the loss (BCE + focal Dice, Dice also on
empty targets) penalises false positives on them. NIH train-split images whose report
labels say Pneumothorax can join as image-level positives (no mask: :func:`nih_labelled_samples`).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image

from cxr_core.stages.pneumothorax import SEGMENT
from cxr_core.training.data import (
    SegSample,
    datalist_samples,
    folder_samples,
    read_manifest,
    read_mask,
)
from cxr_core.training.provenance import dataset_source
from cxr_core.training.rle import SIIM_SHAPE, decode_union, read_rle_table

log = logging.getLogger(__name__)

STRUCTURES = (SEGMENT,)
SIIM_SET = "pneumothorax_siim_github"
NIH_SET = "nih_cxr14_normal_pneumonia"
NIH_MULTILABEL_SET = "nih_cxr14_multilabel"
"""NIH images with all 14 labels, patient-disjoint from :data:`NIH_SET`: never trained on
here, they measure the detector on NIH-labelled pneumothorax."""
SOURCE_CHECK = "source_check"
"""Split of samples kept out of training to test whether the model learned the source."""
Counts = dict[str, dict[str, int]]
"""``split -> {"<source>_positive" | "<source>_negative": images}``."""


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
        """A known-empty mask of ``shape``."""
        return self._save(f"empty_{shape[0]}x{shape[1]}", np.zeros(shape, dtype=bool))

    def write(self, key: str, mask: npt.NDArray[np.bool_]) -> Path:
        """``mask`` as a PNG named by ``key`` and its content."""
        if not mask.any():
            return self.empty((mask.shape[0], mask.shape[1]))
        digest = hashlib.sha256(np.packbits(mask).tobytes() + str(mask.shape).encode()
                                ).hexdigest()[:16]
        return self._save(f"{key}_{digest}", mask)

    def _save(self, stem: str, mask: npt.NDArray[np.bool_]) -> Path:
        path = self.folder / f"{stem}.png"
        if not path.is_file():
            # a unique temporary name, then rename: concurrent runs never see half a file
            handle, temporary = tempfile.mkstemp(suffix=".png", dir=self.folder)
            with open(handle, "wb") as stream:
                Image.fromarray(mask.astype(np.uint8) * 255).save(stream, format="PNG")
            Path(temporary).replace(path)
        return path


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
    for row in read_manifest(siim_root):
        negative = row["label_pneumothorax"] == "0"
        split = SOURCE_CHECK if negative and hold_out_siim_negatives else row["split"]
        samples.append(SegSample(image=siim_root / row["image"],
                                 masks={SEGMENT: siim_root / row["mask_pneumothorax"]},
                                 split=split, source="siim", key=row["source_id"]))
    rows = read_manifest(nih_root)
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


def nih_labelled_samples(data_root: Path, masks: MaskFiles) -> list[SegSample]:
    """The NIH *train*-split images labelled Pneumothorax (both NIH sets) as image-level
    positives (:attr:`SegSample.present`, no mask), and the ``nih_cxr14_multilabel`` train
    images without it as known-empty negatives (mostly PA, other findings too: the same
    source and view as those positives, so neither is a cue).

    Only the train split: the val split stays as before (model selection is comparable)
    and the val and test images stay unseen for the NIH transfer check.
    """
    def labelled(row: dict[str, str], dataset: str) -> bool:
        column = "label_findings" if dataset == NIH_SET else "finding_labels"
        return row["split"] == "train" and "Pneumothorax" in row[column].split("|")

    samples, negatives = [], []
    for dataset in (NIH_SET, NIH_MULTILABEL_SET):
        root = data_root / dataset
        rows = read_manifest(root) if (root / "manifest.csv").is_file() else []
        samples += [SegSample(image=root / row["image"], masks={}, present=(SEGMENT,),
                              source="nih_labelled", key=row["source_id"])
                    for row in rows if labelled(row, dataset)]
        if dataset == NIH_MULTILABEL_SET:
            negatives = [r for r in rows if r["split"] == "train" and not labelled(r, dataset)]
    return samples + _nih_negatives(data_root / NIH_MULTILABEL_SET, negatives, len(negatives),
                                    "nih_multilabel", masks)


def siim_samples(dicom_dir: Path, rle_csv: Path, masks: MaskFiles) -> list[SegSample]:
    """The SIIM-ACR layout: ``*.dcm`` anywhere under ``dicom_dir``, masks from the RLE CSV
    joined on SOPInstanceUID; split by hash of PatientID (SIIM ids are per patient).

    Raises
    ------
    ValueError
        For a DICOM whose size is not the 1024x1024 the SIIM RLE is defined on.
    """
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
    nih_labelled: bool = False
    """Add :func:`nih_labelled_samples` (shared data only)."""
    siim_dicom: Path | None = None
    siim_csv: Path | None = None
    folders: list[Path] = field(default_factory=list)
    datalists: list[Path] = field(default_factory=list)

    def samples(self, masks: MaskFiles) -> list[SegSample]:
        """Every labelled image of every source.

        Raises
        ------
        ValueError
            For half a SIIM layout, or when no source holds a labelled image.
        """
        if (self.siim_dicom is None) != (self.siim_csv is None):
            raise ValueError("siim_dicom: the SIIM layout needs both the DICOM folder and "
                             "the RLE CSV")
        samples = []
        if self.data_root is not None:
            samples += shared_samples(
                self.data_root, masks, nih_negatives=self.nih_negatives,
                nih_pneumonia_negatives=self.nih_pneumonia_negatives,
                hold_out_siim_negatives=self.hold_out_siim_negatives)
            if self.nih_labelled:
                samples += nih_labelled_samples(self.data_root, masks)
        if self.siim_dicom is not None and self.siim_csv is not None:
            samples += siim_samples(self.siim_dicom, self.siim_csv, masks)
        for folder in self.folders:
            samples += png_folder_samples(folder)
        for datalist in self.datalists:
            samples += [s for s in datalist_samples(datalist, STRUCTURES) if s.masks]
        if not samples:
            raise ValueError("sources: no labelled pneumothorax images were found")
        return samples

    def describe(self) -> list[str]:
        """The sources as a card's ``provenance.datasets`` lists them."""
        described = []
        if self.data_root is not None:
            negatives = (f"'No Finding' images as negatives, at most {self.nih_negatives} per "
                         "split")
            if self.nih_pneumonia_negatives:
                negatives += ("; Pneumonia images without a Pneumothorax label as negatives, "
                              f"at most {self.nih_pneumonia_negatives} per split")
            described += [dataset_source(self.data_root, SIIM_SET, "SIIM RLE table: "
                                         "../shared/data/label_tables/SOURCE.md"),
                          dataset_source(self.data_root, NIH_SET, negatives)]
            if self.nih_labelled:
                described.append(dataset_source(
                    self.data_root, NIH_MULTILABEL_SET, "train split: images labelled "
                    f"Pneumothorax as image-level positives (with the {NIH_SET} train ones), "
                    "the others as negatives"))
        if self.siim_dicom is not None:
            described.append(f"SIIM layout: {self.siim_dicom} + {self.siim_csv}")
        described += [f"PNG folder: {f}" for f in self.folders]
        described += [f"datalist: {d}" for d in self.datalists]
        return described


def is_positive(sample: SegSample) -> bool:
    """Whether the sample is labelled present, or its pneumothorax mask has any pixel."""
    return SEGMENT in sample.present or bool(read_mask(sample.masks[SEGMENT]).any())


def count_samples(samples: Sequence[SegSample]) -> Counts:
    """Images per split and per ``<source>_<positive|negative>``."""
    counts: Counts = {}
    for sample in samples:
        label = "positive" if is_positive(sample) else "negative"
        bucket = counts.setdefault(sample.split, {})
        bucket[f"{sample.source}_{label}"] = bucket.get(f"{sample.source}_{label}", 0) + 1
    return counts
