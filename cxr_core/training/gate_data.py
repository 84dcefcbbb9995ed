"""What the chest gate learns from: frontal chest radiographs, lateral chest views and
images that are not chest radiographs, with their splits and sources.

Frontal chests come from every shared chest set (their own patient-disjoint splits).
Laterals and CT slices are the ``covid_cxr_v7lungs`` rows that are not frontal. The other
negatives are synthetic (:mod:`cxr_core.training.gate_synthetic`) and the face photos of
scikit-image's ``lfw_subset``. Two sources are kept out of training altogether to measure
the gate on what it never saw: scikit-image's sample pictures (photos, micrographs, text,
a fundus photo...) and pydicom's bundled test images (CT, MR, NM, US, secondary
captures), plus the shared extremity CR (``RG3``).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from cxr_core.io import read_radiograph
from cxr_core.padding import condition
from cxr_core.training.data import read_manifest
from cxr_core.training.gate_synthetic import MAKERS, synthetic_image

FRONTAL, LATERAL, OTHER = "frontal", "lateral", "other"
CONTENT = (FRONTAL, LATERAL, OTHER)
ROTATIONS = (0, 90, 180, 270)
"""Quarter turns of the image, counter-clockwise, as ``numpy.rot90`` turns."""
LABELS = (*CONTENT, *(f"rotated_{r}" for r in ROTATIONS), "mirrored")
"""The gate network's outputs: content (softmax), rotation (softmax), mirrored (sigmoid)."""

CHEST_SETS = ("covid_cxr_v7lungs", "covid_cxr_gb_lr_lungs", "hannover_covid_cxr",
              "nih_cxr14_normal_pneumonia", "nih_cxr14_multilabel", "kermany_pediatric_224",
              "pneumothorax_siim_github")
"""Shared sets of frontal chest radiographs (``v7`` only its frontal rows)."""
SYNTHETIC_PER_KIND = 60
UNSEEN_SOURCES = ("skimage", "pydicom_test_files", "shared_extremity_cr")
"""Negative sources never trained on: the gate's figures on them are out-of-source."""


@dataclass(frozen=True)
class GateSample:
    """One image with what it shows."""

    key: str
    source: str
    content: str
    split: str
    """``train``, ``val`` or ``test``; unseen sources are all ``test``."""
    load: Callable[[], np.ndarray]
    """Presentation pixels (MONOCHROME2, any range), as the engine would see them."""


def hash_split(key: str) -> str:
    """70/15/15 by a hash of ``key`` (for sources without their own splits)."""
    fraction = int(hashlib.sha256(f"gate:{key}".encode()).hexdigest()[:8], 16) / 2**32
    return "train" if fraction < 0.70 else "val" if fraction < 0.85 else "test"


def _read_pixels(path: Path) -> np.ndarray:
    return read_radiograph(path).pixels


def _same(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(pixels, dtype=np.float32)


def chest_samples(data_root: Path) -> list[GateSample]:
    """Frontal chests of every shared set, laterals and CT slices of ``v7``."""
    samples = []
    for name in CHEST_SETS:
        folder = data_root / name
        for row in read_manifest(folder):
            if name == "covid_cxr_v7lungs" and row.get("is_frontal_cxr") != "True":
                content = LATERAL if row["modality"] == "X-ray" else OTHER
                source = "v7_lateral" if content == LATERAL else "v7_ct"
            else:
                content, source = FRONTAL, name
            samples.append(GateSample(key=f"{name}/{row['image']}", source=source,
                                      content=content, split=row["split"],
                                      load=partial(_read_pixels, folder / row["image"])))
    return samples


def synthetic_samples(per_kind: int = SYNTHETIC_PER_KIND) -> list[GateSample]:
    return [GateSample(key=f"synthetic/{kind}/{i}", source=f"synthetic_{kind}", content=OTHER,
                       split=hash_split(f"{kind}/{i}"),
                       load=partial(synthetic_image, kind, i))
            for kind in MAKERS for i in range(per_kind)]


def face_samples() -> list[GateSample]:
    """scikit-image's ``lfw_subset``: 200 small face photos (a training source)."""
    faces = np.load(_skimage_data() / "lfw_subset.npy")
    return [GateSample(key=f"lfw/{i}", source="lfw_faces", content=OTHER,
                       split=hash_split(f"lfw/{i}"),
                       load=partial(_same, face))
            for i, face in enumerate(faces)]


def skimage_samples() -> list[GateSample]:
    """scikit-image's bundled sample pictures (never trained on)."""
    folder = _skimage_data()
    pictures = sorted(p for p in folder.iterdir() if p.suffix in {".png", ".jpg", ".gif"})
    return [GateSample(key=f"skimage/{p.name}", source="skimage", content=OTHER,
                       split="test", load=partial(_gray_image, p)) for p in pictures]


def pydicom_samples() -> list[GateSample]:
    """pydicom's bundled test images of at least 128 px a side, one per pixel content
    (the same image in several encodings counts once; never trained on)."""
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    samples, seen = [], set()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        pixels = _dicom_pixels(path)
        if pixels is None or min(pixels.shape) < 128:
            continue
        digest = hashlib.sha256(np.round(_unit(pixels) * 63).astype(np.uint8).tobytes()
                                ).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        samples.append(GateSample(key=f"pydicom/{path.name}", source="pydicom_test_files",
                                  content=OTHER, split="test",
                                  load=partial(_same, pixels)))
    return samples


def extremity_samples(data_root: Path) -> list[GateSample]:
    """The shared lower-leg CR (``RG3``), read past its header's refusal."""
    path = data_root / "dicom_samples" / "RG3_UNCR.dcm"
    paths = [path] if path.is_file() else sorted((data_root / "dicom_samples").glob("RG3_*"))
    return [GateSample(key=f"dicom_samples/{p.name}", source="shared_extremity_cr",
                       content=OTHER, split="test",
                       load=partial(_dicom_presentation, p))
            for p in paths[:1]]


def gate_samples(data_root: Path) -> list[GateSample]:
    """Every sample the gate trains, selects and is tested on."""
    return (chest_samples(data_root) + synthetic_samples() + face_samples()
            + skimage_samples() + pydicom_samples() + extremity_samples(data_root))


def conditioned(pixels: np.ndarray) -> np.ndarray:
    """Pixels as the engine hands them to its stages (frame cropped, corners filled)."""
    return condition(pixels)[0]


# --------------------------------------------------------------------------- helpers


def _skimage_data() -> Path:
    import skimage.data  # training only: the [train] extra

    return Path(skimage.data.__file__).parent


def _gray_image(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float32)


def _unit(pixels: np.ndarray) -> np.ndarray:
    low, high = float(pixels.min()), float(pixels.max())
    return (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)


def _dicom_pixels(path: Path) -> np.ndarray | None:
    quiet = logging.getLogger("pydicom")
    level, quiet.level = quiet.level, logging.CRITICAL  # broken on purpose: no tracebacks
    try:
        return _decoded(path)
    finally:
        quiet.setLevel(level)


def _decoded(path: Path) -> np.ndarray | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = pydicom.dcmread(path)
            if "PixelData" not in dataset:
                return None
            return _presentation(dataset)
        except Exception:  # many test files are broken on purpose
            return None


def _dicom_presentation(path: Path) -> np.ndarray:
    return _presentation(pydicom.dcmread(path))


def _presentation(dataset: pydicom.Dataset) -> np.ndarray:
    """One gray frame of any test image: the middle frame, colour to gray, MONOCHROME1
    inverted."""
    pixels = np.asarray(dataset.pixel_array, dtype=np.float32)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples > 1:
        pixels = pixels.mean(axis=-1)
    while pixels.ndim > 2:
        pixels = pixels[pixels.shape[0] // 2]
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = pixels.max() + pixels.min() - pixels
    return pixels


def by_split(samples: list[GateSample]) -> Iterator[tuple[str, list[GateSample]]]:
    for split in ("train", "val", "test"):
        yield split, [s for s in samples if s.split == split]
