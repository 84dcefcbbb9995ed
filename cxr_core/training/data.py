"""Segmentation samples from the places labels come from.

Sources: the shared manifests (``../shared/data``), a folder of ``images/`` + ``masks/``,
and MONAI datalist JSON files (which is also what the SlicerCXR label store writes).
A :class:`SegSample` names its image and one mask file per structure it has; a structure
without a mask is *unknown* for that sample (not empty) and is left out of the loss, unless
the sample says the structure is *present* (an image-level label, e.g. an NIH report's
"Pneumothorax"): then only the image-level part of a lesion loss uses it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from cxr_core.io import read_radiograph
from cxr_core.padding import condition
from cxr_core.preprocess import ToModelInput
from cxr_core.training.augment import Augment

LUNG_STRUCTURES = ("right_lung", "left_lung", "heart")
BOTH_LUNGS = "lungs"  # a mask of both lungs, split into right/left by position
KNOWN_MASK = 1.0
"""``known`` value of a structure whose mask is known (possibly empty)."""
KNOWN_PRESENT = 2.0
"""``known`` value of a structure known to be present whose extent is unknown (an
image-level label): pixel losses skip it, image-level losses count it as positive."""


@dataclass
class SegSample:
    """One labelled image: its file and one mask file per structure it has."""

    image: Path
    masks: dict[str, Path]
    split: str = "train"
    source: str = ""
    key: str = field(default="")
    present: tuple[str, ...] = ()
    """Structures known present without a mask (image-level labels)."""

    def __post_init__(self) -> None:
        self.key = self.key or self.image.stem


def shared_lung_samples(data_root: Path) -> list[SegSample]:
    """V7 (both lungs) and General Blockchain (left/right/heart) samples, one per image.

    The 64 images in both sets keep the General Blockchain masks (they carry laterality
    and the heart); splits agree between the sets, so no image crosses a split.
    """
    gb_root, v7_root = data_root / "covid_cxr_gb_lr_lungs", data_root / "covid_cxr_v7lungs"
    samples, gb_sources = [], set()
    for row in read_manifest(gb_root):
        masks = {
            "right_lung": row["mask_lung_right"],
            "left_lung": row["mask_lung_left"],
            "heart": row["mask_heart_mediastinum"],
        }
        samples.append(SegSample(
            image=gb_root / row["image"],
            masks={k: gb_root / v for k, v in masks.items() if v},
            split=row["split"], source="covid_cxr_gb_lr_lungs",
        ))
        gb_sources.add(row["source_id"])
    for row in read_manifest(v7_root):
        if row["usable_for_lung_seg"] != "True" or row["source_id"] in gb_sources:
            continue
        samples.append(SegSample(
            image=v7_root / row["image"], masks={BOTH_LUNGS: v7_root / row["mask_lungs"]},
            split=row["split"], source="covid_cxr_v7lungs",
        ))
    return samples


def folder_samples(root: Path, structures: Sequence[str], split: str = "train") -> list[SegSample]:
    """``root/images/<stem>.png`` with ``root/masks/<stem>_<structure>.png`` (or
    ``root/masks/<stem>.png`` when a single structure is asked for)."""
    samples = []
    for image in sorted((root / "images").glob("*.png")):
        masks: dict[str, Path] = {}
        for structure in structures:
            for candidate in (f"{image.stem}_{structure}.png", f"{image.stem}.png"):
                path = root / "masks" / candidate
                if path.is_file() and (len(structures) == 1 or candidate != f"{image.stem}.png"):
                    masks[structure] = path
                    break
        samples.append(SegSample(image=image, masks=masks, split=split, source=str(root)))
    return samples


def datalist_samples(path: Path, structures: Iterable[str]) -> list[SegSample]:
    """MONAI datalist JSON: ``{"training": [{"image": ..., "<structure>": ...}], ...}``.

    Keys ``training``/``validation``/``test`` become splits; relative paths are relative
    to the JSON file. A ``label`` key stands for the first structure asked for.
    """
    structures = list(structures)
    document = json.loads(path.read_text())
    splits = {"training": "train", "validation": "val", "test": "test"}
    samples = []
    for key, split in splits.items():
        for entry in document.get(key, []):
            masks: dict[str, Path] = {}
            for structure in structures:
                value = entry.get(structure) or (entry.get("label") if structure == structures[0]
                                                 else None)
                if value:
                    masks[structure] = (path.parent / value).resolve()
            samples.append(SegSample(
                image=(path.parent / entry["image"]).resolve(), masks=masks, split=split,
                source=str(path), key=entry.get("id", ""),
            ))
    return samples


def read_manifest(root: Path) -> list[dict[str, str]]:
    """The rows of a shared dataset's ``manifest.csv``."""
    with (root / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def read_mask(path: Path) -> npt.NDArray[np.bool_]:
    """A 0/255 (or 0/1) mask PNG as a bool array."""
    with Image.open(path) as image:
        if image.mode == "1":
            return np.asarray(image, dtype=bool)
        return np.asarray(image.convert("L")) > 127


def split_both_lungs(mask: npt.NDArray[np.bool_]
                     ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Split a both-lungs mask into (right, left) in radiological display.

    Patient-right is on image-left. Connected components go to the side of their
    centroid; a component straddling the middle is cut at its narrowest column near it.
    """
    labels, count = ndimage.label(mask)
    right, left = np.zeros_like(mask), np.zeros_like(mask)
    width = mask.shape[1]
    for index in range(1, count + 1):
        component = labels == index
        columns = np.nonzero(component.any(axis=0))[0]
        start, stop = columns[0], columns[-1]
        if start < 0.4 * width and stop > 0.6 * width:
            window = slice(int(0.35 * width), int(0.65 * width))
            cut = window.start + int(np.argmin(component[:, window].sum(axis=0)))
            right[:, :cut] |= component[:, :cut]
            left[:, cut:] |= component[:, cut:]
        elif (start + stop) / 2 < width / 2:
            right |= component
        else:
            left |= component
    return right, left


def sample_targets(sample: SegSample, structures: Sequence[str]
                   ) -> dict[str, npt.NDArray[np.bool_]]:
    """Masks for the structures this sample knows, at source resolution."""
    masks = {name: read_mask(path) for name, path in sample.masks.items()}
    if BOTH_LUNGS in masks and "right_lung" in structures:
        masks["right_lung"], masks["left_lung"] = split_both_lungs(masks.pop(BOTH_LUNGS))
    return {name: masks[name] for name in structures if name in masks}


@dataclass
class SegmentationTensors:
    """A segmentation set in memory (a :class:`~cxr_core.training.loop.TrainData`):
    images ``(N,1,H,W)``, targets ``(N,C,H,W)`` in 0..1, known ``(N,C)`` as 0 (unknown),
    :data:`KNOWN_MASK` or :data:`KNOWN_PRESENT`."""

    images: torch.Tensor
    targets: torch.Tensor
    known: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def inputs(self) -> torch.Tensor:
        """The images, as the network sees them."""
        return self.images

    def batch(self, index: torch.Tensor, augment: Augment, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augmented images, targets and known flags of the samples ``index``."""
        # image and masks go through the same geometry
        images, targets = augment(self.images[index], self.targets[index], generator)
        return images, targets, self.known[index]


def load_tensors(samples: Sequence[SegSample], structures: Sequence[str],
                 size: tuple[int, int]) -> SegmentationTensors:
    """Read and resize every sample once: images ``(N,1,H,W)``, targets ``(N,C,H,W)`` in
    0..1 (area-resized masks), known ``(N,C)`` (:class:`SegmentationTensors`)."""
    to_input = ToModelInput(size)
    images, targets, known = [], [], []
    for sample in samples:
        # as the engine does: frame cropped (the masks with it), corners filled
        pixels, box = condition(read_radiograph(sample.image).pixels)
        images.append(to_input(pixels)[0])
        masks = {name: mask[box] if box is not None else mask
                 for name, mask in sample_targets(sample, structures).items()}
        target = torch.zeros(len(structures), *size)
        for channel, name in enumerate(structures):
            if name in masks:
                mask = torch.from_numpy(masks[name].astype(np.float32))[None, None]
                target[channel] = F.interpolate(mask, size=size, mode="area")[0, 0]
        targets.append(target)
        known.append(torch.tensor([KNOWN_MASK if name in masks else KNOWN_PRESENT
                                   if name in sample.present else 0.0 for name in structures]))
    return SegmentationTensors(torch.stack(images), torch.stack(targets), torch.stack(known))
