"""Images with finding labels and their tensors for training.

Labels: ``abnormal`` and the 14 NIH ChestX-ray14 findings. Sources: the shared NIH sets
(normal/pneumonia, 14-label), the pediatric Kermany set (abnormal/pneumonia only),
the COVID-19 sets (abnormal only; checks, never training), and the layouts users bring
(:mod:`cxr_core.training.findings_layouts`).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from cxr_core.io import read_radiograph
from cxr_core.measure import lung_union
from cxr_core.padding import condition
from cxr_core.preprocess import PERCENTILE
from cxr_core.segmentation import Segmenter
from cxr_core.stages.findings import LUNG_MASKED, WHOLE_IMAGE, FindingsInput
from cxr_core.training.augment import Augment
from cxr_core.training.data import read_manifest

NIH_FINDINGS: dict[str, str] = {
    "Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation", "Edema": "edema", "Effusion": "effusion",
    "Emphysema": "emphysema", "Fibrosis": "fibrosis", "Hernia": "hernia",
    "Infiltration": "infiltration", "Mass": "mass", "Nodule": "nodule",
    "Pleural_Thickening": "pleural_thickening", "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
}
"""NIH ChestX-ray14 finding names -> our label names (CheXpert's overlap the same way)."""
LABELS = ("abnormal", *sorted(NIH_FINDINGS.values()))
"""Every label the classifier is trained on; a card ships the ones the data supports."""
NIH_DATASET = "nih_cxr14_normal_pneumonia"
NIH_MULTILABEL = "nih_cxr14_multilabel"
KERMANY = "kermany_pediatric_224"
NO_FINDING = "No Finding"
ABNORMAL_ONLY_SOURCES = {"hannover_covid_cxr": "hannover", "covid_cxr_v7lungs": "v7"}
"""Shared sets whose every image is abnormal (COVID-19): never trained on (a source that
is always positive teaches the source, not the finding); used as unseen-source checks.
``covid_cxr_gb_lr_lungs`` is left out: most of its images are also in the V7 set."""

Box = tuple[str, float, float, float, float]
"""``(finding, x, y, width, height)`` in image pixels."""


@dataclass
class FindingsSample:
    """One image with its finding labels (and NIH boxes, where it has them)."""

    image: Path
    labels: dict[str, float]
    """0/1 per label name; a label that is absent here is unknown for this image."""
    split: str = "train"
    view: str = ""
    boxes: list[Box] = field(default_factory=list)
    key: str = ""
    source: str = "nih"
    """Which hospital / encoding pipeline the image comes from (cross-source checks)."""

    def __post_init__(self) -> None:
        self.key = self.key or self.image.stem


def nih_labels(finding_labels: str) -> dict[str, float]:
    """NIH ``Finding Labels`` (pipe-separated) -> 0/1 for ``abnormal`` and every NIH label.

    Raises
    ------
    ValueError
        For an empty label string or a finding NIH does not have.
    """
    findings = {f.strip() for f in finding_labels.split("|") if f.strip()}
    if not findings:
        raise ValueError("finding_labels: empty; expected 'No Finding' or NIH findings")
    unknown = findings - set(NIH_FINDINGS) - {NO_FINDING}
    if unknown:
        raise ValueError(f"finding_labels: not NIH findings: {', '.join(sorted(unknown))}")
    labels = {label: float(name in findings) for name, label in NIH_FINDINGS.items()}
    return {"abnormal": float(findings != {NO_FINDING})} | labels


def parse_boxes(text: str) -> list[Box]:
    """``Finding:x,y,w,h;Finding:x,y,w,h`` (the manifest's ``nih_bbox_resized_xywh``)."""
    boxes = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, numbers = part.partition(":")
        x, y, w, h = (float(v) for v in numbers.split(","))
        boxes.append((name, x, y, w, h))
    return boxes


def nih_findings_samples(data_root: Path) -> list[FindingsSample]:
    """The shared NIH normal/pneumonia set with its fixed patient-disjoint splits."""
    return _nih_manifest(data_root / NIH_DATASET, findings="label_findings", view="view",
                         boxes="nih_bbox_resized_xywh")


def nih_multilabel_samples(data_root: Path) -> list[FindingsSample]:
    """The shared 14-label NIH set (one image per patient, mostly PA)."""
    return _nih_manifest(data_root / NIH_MULTILABEL, findings="finding_labels",
                         view="view_position", boxes="nih_boxes")


def _nih_manifest(root: Path, *, findings: str, view: str, boxes: str) -> list[FindingsSample]:
    """A shared NIH manifest, its columns named as that set names them."""
    return [FindingsSample(image=root / row["image"], labels=nih_labels(row[findings]),
                           split=row["split"], view=row[view], boxes=parse_boxes(row[boxes]))
            for row in read_manifest(root)]


def kermany_samples(data_root: Path) -> list[FindingsSample]:
    """The shared pediatric set (another hospital, both classes): ``abnormal`` and
    ``pneumonia`` are known (the same here), the other labels are not."""
    root = data_root / KERMANY
    samples = []
    for row in read_manifest(root):
        sick = float(row["label_normal_abnormal"] == "abnormal")
        samples.append(FindingsSample(image=root / row["image"],
                                      labels={"abnormal": sick, "pneumonia": sick},
                                      split=row["split"], source="kermany"))
    return samples


def abnormal_only_samples(data_root: Path) -> list[FindingsSample]:
    """The COVID-19 sets (every image abnormal) with their frontal images only."""
    samples = []
    for folder, source in ABNORMAL_ONLY_SOURCES.items():
        for row in read_manifest(data_root / folder):
            if row.get("usable_for_lung_seg", "True") == "False":
                continue  # CT slices and laterals: the gate refuses them
            samples.append(FindingsSample(image=data_root / folder / row["image"],
                                          labels={"abnormal": 1.0}, split=row["split"],
                                          view=(row.get("view", "").upper().split() or [""])[0],
                                          source=source))
    return samples


def nih_table_samples(table: Path, image_dir: Path, split: str = "train") -> list[FindingsSample]:
    """An NIH ``Data_Entry``-style CSV (``Image Index``, ``Finding Labels``,
    ``View Position``) whose images are in ``image_dir``; rows without an image are skipped."""
    samples = []
    with Path(table).open(newline="") as handle:
        for row in csv.DictReader(handle):
            image = Path(image_dir) / row["Image Index"]
            if image.is_file():
                samples.append(FindingsSample(image=image, labels=nih_labels(row["Finding Labels"]),
                                              split=split, view=row.get("View Position", "")))
    return samples


@dataclass
class FindingsTensors:
    """A findings set in memory, read as one input ``mode`` (a
    :class:`~cxr_core.training.loop.TrainData`).

    Whole-image inputs ``(N,1,h,w)``, dilated lung masks ``(N,1,h,w)`` (bool), targets
    and known flags ``(N, labels)``. One read serves both modes: :meth:`with_mode` gives
    the same tensors read the other way.
    """

    images: torch.Tensor
    masks: torch.Tensor
    targets: torch.Tensor
    known: torch.Tensor
    mode: str = WHOLE_IMAGE

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def select(self, rows: Sequence[int]) -> FindingsTensors:
        """The samples ``rows`` only."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return dataclasses.replace(self, images=self.images[index], masks=self.masks[index],
                                   targets=self.targets[index], known=self.known[index])

    def with_mode(self, mode: str) -> FindingsTensors:
        """The same tensors read as ``mode`` (``whole_image`` or ``lung_masked``)."""
        return dataclasses.replace(self, mode=mode)

    def inputs(self) -> torch.Tensor:
        """Network inputs: the images, blanked outside the lungs in ``lung_masked`` mode."""
        return self.images * self.masks if self.mode == LUNG_MASKED else self.images

    def batch(self, index: torch.Tensor, augment: Augment, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augmented inputs, targets and known flags of the samples ``index``."""
        # The lung mask goes through the same geometry, then re-blanks the background
        # (the intensity jitter would otherwise lift the black outside the lungs).
        images, masks = augment(self.images[index], self.masks[index].float(), generator)
        if self.mode == LUNG_MASKED:
            images = images * (masks > 0.5)
        return images, self.targets[index], self.known[index]


def load_findings_tensors(samples: Sequence[FindingsSample], size: tuple[int, int],
                          segmenter: Segmenter | None, dilation: float,
                          normalization: str = PERCENTILE) -> FindingsTensors:
    """Read every image once; lung masks come from ``segmenter`` (None: no masking);
    ``normalization`` as the card will say (:class:`cxr_core.preprocess.ToModelInput`)."""
    to_input = FindingsInput(size, LUNG_MASKED, dilation, normalization=normalization)
    images, masks = [], []
    for sample in tqdm(samples, desc="reading", unit="image", leave=False):
        pixels = condition(read_radiograph(sample.image).pixels)[0]  # as the engine does
        images.append(to_input.to_input(pixels)[0])
        lungs = None if segmenter is None else lung_union(segmenter(pixels).masks)
        if lungs is None:
            masks.append(torch.ones(1, *size, dtype=torch.bool))
            continue
        masks.append(to_input.network_mask(lungs)[0].bool())
    targets = torch.tensor([[s.labels.get(label, 0.0) for label in LABELS] for s in samples])
    known = torch.tensor([[float(label in s.labels) for label in LABELS] for s in samples])
    return FindingsTensors(torch.stack(images), torch.stack(masks), targets, known)
