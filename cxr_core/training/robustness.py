"""``cxr evaluate robustness``: what PACS-style changes to an image do to the answers.

Each shared test image (the 15 ``covid_cxr_gb_lr_lungs`` test images with radiologists'
masks and 10 NIH test images, as in the 2026-11-29 clinical probe) is changed the way
archives and scanners change images: quarter turns, mirroring, black frames and corners,
burned-in text, JPEG, rescaling, bit depth, gamma and inversion. Every copy goes through
two engines with the same models:

* *before*: no gate and no padding filling (the engine as it was);
* *after*: the engine as shipped (padding filled, chest gate).

For each change and engine the table gives how many copies were refused (and why, in
short), and on the analysed ones: pneumonia decisions flipped against the untouched image,
the mean absolute change of the pneumonia probability, the both-lung Dice against the
untouched image's lungs (masks mapped back for turns and mirrors), how often the "right
lung" lies on the patient's left, and the change of the cardiothoracic ratio.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from tqdm import tqdm

from cxr_core.analysis import Analysis
from cxr_core.engine import DEFAULT_STAGES, Engine
from cxr_core.io import RefusedInput
from cxr_core.radiograph import PixelSpacing, Radiograph
from cxr_core.training.data import read_manifest

GB, NIH = "covid_cxr_gb_lr_lungs", "nih_cxr14_normal_pneumonia"

Geometry = tuple[int, bool]
"""Quarter turns counter-clockwise and mirrored: how a change moved the pixels."""


@dataclass(frozen=True)
class Change:
    """One change to an 8-bit image, and how it moved the pixels (to map masks back)."""

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    geometry: Geometry = (0, False)


def _rotate_small(degrees: float, fill: str) -> Callable[[np.ndarray], np.ndarray]:
    def apply(image: np.ndarray) -> np.ndarray:
        mode = "constant" if fill == "black" else "nearest"
        return np.asarray(ndimage.rotate(image, degrees, reshape=False, order=1, mode=mode,
                                         cval=0.0), dtype=np.float32)
    return apply


def _border(fraction: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(image: np.ndarray) -> np.ndarray:
        rows, columns = (max(1, round(fraction * s)) for s in image.shape)
        framed = np.zeros((image.shape[0] + 2 * rows, image.shape[1] + 2 * columns),
                          dtype=np.float32)
        framed[rows:-rows, columns:-columns] = image
        return framed
    return apply


def _jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    def apply(image: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "JPEG",
                                                                      quality=quality)
        buffer.seek(0)
        return np.asarray(Image.open(buffer), dtype=np.float32)
    return apply


def _resize(side: int) -> Callable[[np.ndarray], np.ndarray]:
    def apply(image: np.ndarray) -> np.ndarray:
        scale = side / max(image.shape)
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        return np.asarray(Image.fromarray(image.astype(np.float32)).resize(
            size, Image.Resampling.BILINEAR), dtype=np.float32)
    return apply


def _text(image: np.ndarray) -> np.ndarray:
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, image.shape[1] // 30))
    width, height = canvas.size
    for x, y, text in ((5, 5, "AP PORTABLE"), (width - 90, 5, "L"),
                       (5, height - 30, "ID 0000000"), (width - 160, height - 30,
                                                        "2026-11-29 04:18")):
        draw.text((x, y), text, fill=255, font=font)
    return np.asarray(canvas, dtype=np.float32)


def _gamma(value: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda image: np.asarray(255 * (image / 255) ** value, dtype=np.float32)


CHANGES: tuple[Change, ...] = (
    Change("none", lambda image: image),
    Change("turned 90", lambda image: np.rot90(image, 1).copy(), (1, False)),
    Change("turned 180", lambda image: np.rot90(image, 2).copy(), (2, False)),
    Change("turned 270", lambda image: np.rot90(image, 3).copy(), (3, False)),
    Change("mirrored", lambda image: image[:, ::-1].copy(), (0, True)),
    Change("rotated +10, black corners", _rotate_small(10, "black")),
    Change("rotated -10, black corners", _rotate_small(-10, "black")),
    Change("rotated +10, edge fill", _rotate_small(10, "edge")),
    Change("black frame 5%", _border(0.05)),
    Change("black frame 20%", _border(0.20)),
    Change("text burned in", _text),
    Change("JPEG q30", _jpeg(30)),
    Change("downscaled to 256", _resize(256)),
    Change("upscaled to 3000", _resize(3000)),
    Change("16 bit", lambda image: image * 257.0),
    Change("gamma 0.5", _gamma(0.5)),
    Change("gamma 2.0", _gamma(2.0)),
    Change("inverted", lambda image: 255.0 - image),
)


def test_images(data_root: Path) -> list[tuple[str, np.ndarray]]:
    """The probe's images: the 15 gb test images and 10 NIH test images (the first 5
    normal and 5 abnormal in name order), 8-bit."""
    chosen = [(f"{GB}/{row['image']}", data_root / GB / row["image"])
              for row in read_manifest(data_root / GB) if row["split"] == "test"]
    nih = sorted((r for r in read_manifest(data_root / NIH) if r["split"] == "test"),
                 key=lambda r: r["image"])
    for label in ("normal", "abnormal"):
        chosen += [(f"{NIH}/{r['image']}", data_root / NIH / r["image"])
                   for r in nih if r["label_normal_abnormal"] == label][:5]
    return [(key, np.asarray(Image.open(path).convert("L"), dtype=np.float32))
            for key, path in chosen]


@dataclass
class Outcome:
    refused: str | None
    analysis: Analysis | None


def _analyse(engine: Engine, key: str, pixels: np.ndarray) -> Outcome:
    radiograph = Radiograph(pixels=pixels, spacing=PixelSpacing.unknown(), id=key)
    try:
        return Outcome(None, engine.analyze(radiograph))
    except RefusedInput as error:
        return Outcome(str(error).split(" (")[0], None)


def _unmove(mask: np.ndarray, geometry: Geometry, shape: tuple[int, ...]) -> np.ndarray:
    """A mask of a changed copy in the untouched image's frame."""
    turns, mirrored = geometry
    back = np.rot90(mask, -turns)
    back = back[:, ::-1] if mirrored else back
    if back.shape != shape:  # frames and rescaling: compare on the untouched grid
        image = Image.fromarray(back.astype(np.uint8) * 255)
        if back.shape[0] > shape[0] and (back.shape[0] - shape[0]) % 2 == 0 and \
                (back.shape[1] - shape[1]) % 2 == 0 and back.shape[0] < 2 * shape[0]:
            rows, columns = (back.shape[0] - shape[0]) // 2, (back.shape[1] - shape[1]) // 2
            return back[rows:rows + shape[0], columns:columns + shape[1]]
        back = np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.NEAREST)) > 127
    return back


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def _pneumonia(analysis: Analysis) -> tuple[float, bool]:
    finding = next(f for f in analysis.findings if f.name == "pneumonia")
    return finding.probability, finding.positive


def compare(reference: Analysis, outcome: Outcome, change: Change) -> dict[str, Any]:
    """How one changed copy's analysis differs from the untouched image's."""
    if outcome.analysis is None:
        return {"refused": outcome.refused}
    analysis = outcome.analysis
    shape = reference.radiograph.shape
    lungs = {name: _unmove(analysis.segments[name].mask, change.geometry, shape)
             for name in ("right_lung", "left_lung")}
    before = reference.segments["right_lung"].mask | reference.segments["left_lung"].mask
    wrong_side = _dice(lungs["right_lung"], reference.segments["left_lung"].mask) > 0.5
    p_before, positive_before = _pneumonia(reference)
    p_after, positive_after = _pneumonia(analysis)
    ratios = [a.measurement("cardiothoracic_ratio") for a in (reference, analysis)]
    return {"refused": None, "flip": positive_before != positive_after,
            "delta_p": abs(p_after - p_before),
            "lung_dice": _dice(lungs["right_lung"] | lungs["left_lung"], before),
            "wrong_side": wrong_side,
            "ctr_change": (abs(ratios[1].value - ratios[0].value)
                           if ratios[0] is not None and ratios[1] is not None else None),
            "flags": [str(flag) for flag in analysis.quality_flags]}


def evaluate_robustness(data_root: Path, out_dir: Path,
                        changes: Sequence[Change] = CHANGES) -> dict[str, Any]:
    """The before/after table (also written as ``robustness.csv`` and ``robustness.md``)."""
    engines = {"before": Engine(stages=DEFAULT_STAGES[1:], fill_padding=False),
               "after": Engine()}
    images = test_images(data_root)
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for key, pixels in tqdm(images, desc="robustness", unit="image"):
        references = {name: engine.analyze(Radiograph(pixels=pixels,
                                                      spacing=PixelSpacing.unknown(), id=key))
                      for name, engine in engines.items()}
        for change in changes:
            changed = change.apply(pixels)
            for name, engine in engines.items():
                outcome = _analyse(engine, key, changed)
                rows.setdefault(change.name, {}).setdefault(name, []).append(
                    compare(references[name], outcome, change))
    table = {change: {engine: summarise(results) for engine, results in by_engine.items()}
             for change, by_engine in rows.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(table, out_dir, len(images))
    return {"n_images": len(images), "images": [key for key, _ in images], "table": table}


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    analysed = [r for r in results if r["refused"] is None]
    reasons: dict[str, int] = {}
    for result in results:
        if result["refused"] is not None:
            reasons[result["refused"]] = reasons.get(result["refused"], 0) + 1
    ctr = [r["ctr_change"] for r in analysed if r["ctr_change"] is not None]
    return {
        "n": len(results), "refused": len(results) - len(analysed), "refusals": reasons,
        "analysed": len(analysed),
        "pneumonia_flips": sum(r["flip"] for r in analysed),
        "pneumonia_delta_p_mean": round(float(np.mean([r["delta_p"] for r in analysed])), 3)
        if analysed else None,
        "lung_dice_median": round(float(np.median([r["lung_dice"] for r in analysed])), 3)
        if analysed else None,
        "right_lung_on_patients_left": sum(r["wrong_side"] for r in analysed),
        "ctr_change_median": round(float(np.median(ctr)), 3) if ctr else None,
        "flagged": sum(bool(r["flags"]) for r in analysed),
    }


COLUMNS = ("refused", "analysed", "pneumonia_flips", "pneumonia_delta_p_mean",
           "lung_dice_median", "right_lung_on_patients_left", "ctr_change_median", "flagged")


def _write(table: dict[str, dict[str, dict[str, Any]]], out_dir: Path, n: int) -> None:
    with (out_dir / "robustness.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["change", "engine", *COLUMNS, "refusals"])
        for change, by_engine in table.items():
            for engine, figures in by_engine.items():
                writer.writerow([change, engine, *(figures[c] for c in COLUMNS),
                                 "; ".join(f"{k}: {v}" for k, v in figures["refusals"].items())])
    lines = [f"n = {n} images per change; before = no gate, no padding filling; after = "
             "the shipped engine", "",
             "| change | refused before / after | pneumonia flips before / after | mean abs "
             "dp before / after | lung Dice before / after | right lung on patient's left "
             "before / after | CTR change before / after |",
             "|---|---|---|---|---|---|---|"]
    for change, by_engine in table.items():
        b, a = by_engine["before"], by_engine["after"]

        def pair(key: str, b: dict[str, Any] = b, a: dict[str, Any] = a) -> str:
            return f"{b[key]} / {a[key]}"

        lines.append(f"| {change} | {pair('refused')} | {pair('pneumonia_flips')} | "
                     f"{pair('pneumonia_delta_p_mean')} | {pair('lung_dice_median')} | "
                     f"{pair('right_lung_on_patients_left')} | {pair('ctr_change_median')} |")
    (out_dir / "robustness.md").write_text("\n".join(lines) + "\n")
