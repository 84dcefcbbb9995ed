"""Pneumothorax: segment it, decide whether it is present, measure its size per side.

The decision rule lives here once and is used by the engine stage and by
``cxr evaluate pneumothorax``: the network's mask (small specks already dropped by the
card's ``min_component`` post-processing) loses, when lung masks are given, every region
lying mostly outside the lungs (:class:`ThoraxGate`: gas under the diaphragm, the neck,
soft tissue), and what is left counts as a pneumothorax only when its total area reaches
a configured minimum (mm² when the spacing is trustworthy, otherwise a fraction of the
image). Smaller regions are not reported as present, not segmented and not measured; the
finding still carries the network's probability, and when that probability reaches the
threshold although nothing is reported, the finding's note says which rule decided and
with which numbers (a reader would otherwise see "0.97, absent" as a contradiction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from cxr_core.analysis import Analysis, Finding, Measurement, Segment
from cxr_core.mask_quality import quality_measurements
from cxr_core.measure import area_measurement, lung_union, make_segment, mask_window
from cxr_core.models import LesionRule, ModelCard
from cxr_core.pneumothorax_size import (
    HEMITHORAX_DEFINITION,
    bts_rim,
    collins,
    hemithorax_percent,
)
from cxr_core.radiograph import PixelSpacing
from cxr_core.segmentation import THRESHOLD, Segmenter
from cxr_core.terminology import (
    PNEUMOTHORAX,
    PNEUMOTHORAX_COLLINS_PERCENT,
    PNEUMOTHORAX_HEMITHORAX_PERCENT,
    PNEUMOTHORAX_HILUM_RIM,
    SIDES,
    finding_code,
)

MODEL_NAME = "pneumothorax"
SEGMENT = "pneumothorax"
# Defaults when a card has no lesion rule: 2 cm² is below what SIIM readers outlined
# (the smallest shared mask is 1.4 % of the image, about 5 cm² at 0.168 mm).
DEFAULT_RULE = LesionRule(min_area_mm2=200.0, min_area_fraction=0.004,
                          thorax_margin_fraction=0.02, thorax_min_inside=0.5)


@dataclass(frozen=True)
class MinimumArea:
    """The smallest pneumothorax reported as present.

    Parameters
    ----------
    mm2:
        Minimum total area in mm², used when the image's spacing is trustworthy.
    fraction:
        Minimum total area as a fraction of the image, used otherwise.
    """

    mm2: float = DEFAULT_RULE.min_area_mm2
    fraction: float = DEFAULT_RULE.min_area_fraction

    def __post_init__(self) -> None:
        if self.mm2 < 0:
            raise ValueError(f"mm2: must be >= 0, got {self.mm2}")
        if not 0 <= self.fraction < 1:
            raise ValueError(f"fraction: must be in [0, 1), got {self.fraction}")

    @classmethod
    def from_card(cls, card: ModelCard) -> MinimumArea:
        rule = card.runtime.lesion or DEFAULT_RULE
        return cls(mm2=rule.min_area_mm2, fraction=rule.min_area_fraction)

    def reached(self, mask: np.ndarray, spacing: PixelSpacing) -> bool:
        if spacing.trusted:
            return float(mask.sum()) * spacing.pixel_area_mm2 >= self.mm2  # type: ignore[operator]
        return float(mask.mean()) >= self.fraction

    def describe(self, spacing: PixelSpacing) -> str:
        return f"present when the region is >= {self.limit_text(spacing)}"

    def limit_text(self, spacing: PixelSpacing) -> str:
        """The minimum in the unit the rule uses for this ``spacing`` ("200 mm2")."""
        if spacing.trusted:
            return f"{self.mm2:g} mm2"
        return f"{self.fraction:.2%} of the image"

    def area_text(self, mask: np.ndarray, spacing: PixelSpacing) -> str:
        """The area of ``mask`` in the unit the rule compares for this ``spacing``, rounded
        down, so an area below the minimum never reads as reaching it."""
        if spacing.trusted:
            mm2 = float(mask.sum()) * spacing.pixel_area_mm2  # type: ignore[operator]
            return f"{math.floor(mm2):d} mm2"
        hundredths = int(mask.sum()) * 10_000 // mask.size  # exact: no float rounding up
        return f"{hundredths / 100:.2f}% of the image"


@dataclass(frozen=True)
class ThoraxGate:
    """Keep only mask regions that lie mostly within the lungs.

    A pneumothorax is air between the lung and the chest wall: on the shared SIIM-ACR
    masks at least 81 % of each image's outlined pneumothorax lies within the lung model's lungs
    grown by 2 % of the image width (median 99.8 %). Air under the diaphragm, in the neck
    or in soft tissue does not.

    Parameters
    ----------
    margin_fraction:
        How far the lungs are grown, as a fraction of the image width.
    min_inside:
        Share of a region's pixels that must fall inside the grown lungs.
    """

    margin_fraction: float = DEFAULT_RULE.thorax_margin_fraction
    min_inside: float = DEFAULT_RULE.thorax_min_inside

    def __post_init__(self) -> None:
        if not 0 <= self.margin_fraction < 0.5:
            raise ValueError(f"margin_fraction: must be in [0, 0.5), got {self.margin_fraction}")
        if not 0 <= self.min_inside <= 1:
            raise ValueError(f"min_inside: must be in [0, 1], got {self.min_inside}")

    @classmethod
    def from_card(cls, card: ModelCard) -> ThoraxGate:
        rule = card.runtime.lesion or DEFAULT_RULE
        return cls(margin_fraction=rule.thorax_margin_fraction,
                   min_inside=rule.thorax_min_inside)

    def __call__(self, mask: np.ndarray, lungs: np.ndarray) -> np.ndarray:
        if lungs.shape != mask.shape:
            raise ValueError(f"lungs: shape {lungs.shape} differs from the mask's {mask.shape}")
        box = mask_window(mask, 0)
        if box is None or not lungs.any():
            return mask  # no regions, or no lungs to judge them by
        # label within the regions' box only: a 2k image is mostly empty
        labels, count = ndimage.label(mask[box])
        margin = max(1, round(self.margin_fraction * mask.shape[1]))
        # grow the lungs only around the regions: every lung pixel that can reach one
        # lies within ``margin`` of the box
        window = mask_window(mask, margin + 1)
        assert window is not None  # mask has pixels
        grown = ndimage.binary_dilation(lungs[window], structure=np.ones((3, 3), bool),
                                        iterations=margin)
        window_labels = np.zeros(grown.shape, dtype=labels.dtype)
        window_labels[tuple(slice(side.start - near.start, side.stop - near.start)
                            for side, near in zip(box, window, strict=True))] = labels
        inside = np.asarray(ndimage.mean(grown, window_labels,
                                         index=np.arange(1, count + 1)))
        keep = np.zeros(count + 1, dtype=bool)
        keep[1:] = inside >= self.min_inside
        kept = np.zeros_like(mask)
        kept[box] = keep[labels]
        return kept


@dataclass
class Detection:
    mask: np.ndarray
    """Boolean, source resolution; empty unless ``present``."""
    probability: float
    """Highest pixel probability of the network (the image-level score)."""
    present: bool
    probabilities: np.ndarray
    """``(rows, columns)`` pixel probabilities at the model's input size."""
    candidates: np.ndarray | None = None
    """The network's mask after its card's post-processing (specks dropped), before the
    :class:`ThoraxGate`: boolean, source resolution."""
    inside: np.ndarray | None = None
    """What the :class:`ThoraxGate` kept of ``candidates`` (all of it without lungs);
    ``present`` is whether this reaches the :class:`MinimumArea`."""
    gated: bool = False
    """Whether the :class:`ThoraxGate` judged the regions (lungs were given and found)."""
    agreement: float | None = None
    """The network's mask agreement (:func:`cxr_core.mask_quality.mask_agreement`) over
    its pneumothorax probabilities: how far to trust the mask when one is reported."""


class PneumothoraxDetector:
    """The pneumothorax network plus the minimum-area rule.

    Parameters
    ----------
    segmenter:
        A :class:`~cxr_core.segmentation.Segmenter` whose card labels ``pneumothorax``.
    minimum:
        The minimum-area rule; default from the card's ``runtime.lesion``.
    thorax:
        The rule for regions outside the lungs; default from the card's ``runtime.lesion``.
    """

    def __init__(self, segmenter: Segmenter, minimum: MinimumArea | None = None,
                 thorax: ThoraxGate | None = None) -> None:
        if SEGMENT not in segmenter.card.labels:
            raise ValueError(f"segmenter: model {segmenter.card.identifier} has no "
                             f"{SEGMENT!r} label (labels: {segmenter.card.labels})")
        self.segmenter = segmenter
        self.minimum = minimum or MinimumArea.from_card(segmenter.card)
        self.thorax = thorax or ThoraxGate.from_card(segmenter.card)
        self.channel = segmenter.card.labels.index(SEGMENT)

    @classmethod
    def load(cls, name_or_dir: str | Path = MODEL_NAME, minimum: MinimumArea | None = None, *,
             device: str | torch.device = "cpu") -> PneumothoraxDetector:
        return cls(Segmenter.load(name_or_dir, device=device), minimum)

    def __call__(self, pixels: np.ndarray, spacing: PixelSpacing, *,
                 mirrored: bool = False, lungs: np.ndarray | None = None) -> Detection:
        """Segment and decide; ``lungs`` (both lungs, source resolution) enables the
        :class:`ThoraxGate`."""
        output = self.segmenter(pixels, mirrored=mirrored)
        candidates = output.masks[SEGMENT]
        gated = lungs is not None and bool(lungs.any())
        inside = self.thorax(candidates, lungs) if lungs is not None else candidates
        probabilities = output.probabilities[self.channel].numpy()
        present = bool(inside.any()) and self.minimum.reached(inside, spacing)
        return Detection(inside if present else np.zeros_like(inside),
                         float(probabilities.max()), present, probabilities,
                         candidates=candidates, inside=inside, gated=gated,
                         agreement=output.agreement.get(SEGMENT))

    def note(self, found: Detection, spacing: PixelSpacing, *,
             probability: float | None = None) -> str | None:
        """Which rule overrode the probability, with its numbers, when the probability
        reaches :data:`~cxr_core.segmentation.THRESHOLD` but nothing is reported; None
        otherwise (the probability and the decision then agree).

        Parameters
        ----------
        found:
            What this detector returned.
        spacing:
            The image's spacing, which decides the unit of the minimum area.
        probability:
            The probability as reported (e.g. rounded), default ``found.probability``.
        """
        shown = found.probability if probability is None else probability
        if found.present or shown < THRESHOLD:
            return None
        head = f"{shown:.2f} is the highest pixel probability; the pixels above {THRESHOLD:g}"
        tail = "not reported"
        if found.candidates is None or not found.candidates.any():
            return (f"{head} form only specks smaller than the smallest region kept "
                    f"({self.segmenter.min_fraction:.2%} of the image): {tail}")
        inside = found.inside if found.inside is not None else found.candidates
        if not inside.any():
            return f"{head} lie mostly outside the lungs (thorax rule): {tail}"
        where = " within the lungs" if found.gated else ""
        small = (f"cover {self.minimum.area_text(inside, spacing)}{where}, below the minimum "
                 f"area ({self.minimum.limit_text(spacing)})")
        if (found.candidates & ~inside).any():
            small += "; the others lie mostly outside the lungs"
        return f"{head} {small}: {tail}"


class PneumothoraxStage:
    """Engine stage: adds the pneumothorax finding and, when present, its segment and
    per-side area and percentage of the hemithorax.

    Parameters
    ----------
    detector:
        The network and its minimum-area rule.
    """

    name = "pneumothorax"

    def __init__(self, detector: PneumothoraxDetector) -> None:
        self.detector = detector
        self.card: ModelCard = detector.segmenter.card

    @classmethod
    def load(cls, models_dir: Path, *, device: str | torch.device = "cpu",
             minimum: MinimumArea | None = None) -> PneumothoraxStage:
        """Load ``<models_dir>/pneumothorax``."""
        return cls(PneumothoraxDetector.load(Path(models_dir) / MODEL_NAME, minimum,
                                             device=device))

    @property
    def networks(self) -> Sequence[torch.nn.Module]:
        return [self.detector.segmenter.network]

    def run(self, analysis: Analysis) -> None:
        radiograph = analysis.radiograph
        found = self.detector(radiograph.pixels, radiograph.spacing,
                              mirrored=radiograph.mirrored,
                              lungs=lung_union({name: segment.mask for name, segment
                                                in analysis.segments.items()}))
        probability = round(found.probability, 4)
        analysis.findings.append(Finding(
            name="pneumothorax", code=finding_code("pneumothorax"),
            probability=probability, threshold=THRESHOLD,
            positive=found.present, model_id=self.card.identifier,
            note=self.detector.note(found, radiograph.spacing, probability=probability)))
        if not found.present:
            return
        segment = make_segment(SEGMENT, found.mask, radiograph.spacing, self.card.identifier,
                               quality=found.agreement)
        analysis.segments[SEGMENT] = segment
        analysis.measurements += side_measurements(
            found.mask, analysis.segments, radiograph.spacing, mirrored=radiograph.mirrored)
        analysis.measurements += quality_measurements([segment])


def side_measurements(mask: np.ndarray, segments: Mapping[str, Segment], spacing: PixelSpacing,
                      *, mirrored: bool = False) -> list[Measurement]:
    """Per affected side: pneumothorax area, its percentage of that hemithorax and, when
    the spacing is trustworthy, Collins' size estimate and the BTS rim at the hilum.

    The percentage (:func:`~cxr_core.pneumothorax_size.hemithorax_percent`) does not
    depend on the pixel spacing; it and Collins are left out when that lung is missing.
    """
    results = []
    for side, side_mask in split_by_side(mask, segments, mirrored=mirrored).items():
        if not side_mask.any():
            continue
        name = f"pneumothorax_{side}"
        results.append(area_measurement(f"{name}_area", make_segment(name, side_mask, spacing),
                                        spacing, site=PNEUMOTHORAX, laterality=SIDES[side]))
        lung = segments.get(f"{side}_lung")
        if lung is None or lung.pixel_count == 0:
            continue
        results.append(Measurement(
            f"{name}_hemithorax_percent",
            round(hemithorax_percent(side_mask, lung.mask), 1), "%",
            f"pneumothorax pixels / hemithorax pixels on the patient's {side}; "
            f"{HEMITHORAX_DEFINITION}; projected area on a radiograph, not a volume",
            concept=PNEUMOTHORAX_HEMITHORAX_PERCENT, site=PNEUMOTHORAX,
            laterality=SIDES[side]))
        estimate = collins(side_mask, lung.mask, spacing,
                           lateral_left=(side == "right") != mirrored)
        if estimate is not None:
            results.append(Measurement(
                f"{name}_collins_percent", round(estimate.percent, 1), "%",
                estimate.derivation(spacing), concept=PNEUMOTHORAX_COLLINS_PERCENT,
                site=PNEUMOTHORAX, laterality=SIDES[side]))
        rim = bts_rim(side_mask, lung.mask, spacing, lateral_left=(side == "right") != mirrored)
        if rim is not None:
            results.append(Measurement(
                f"{name}_hilum_rim", round(rim.rim_mm, 1), "mm", rim.derivation(spacing),
                concept=PNEUMOTHORAX_HILUM_RIM, site=PNEUMOTHORAX, laterality=SIDES[side]))
    return results


def split_by_side(mask: np.ndarray, segments: Mapping[str, Segment], *,
                  mirrored: bool = False) -> dict[str, np.ndarray]:
    """Assign each connected region of ``mask`` to the patient side of the nearer lung.

    Without both lungs, the image halves decide (patient-right on image-left unless
    the image is ``mirrored``).
    """
    centres = _lung_centres(segments)
    if centres is None:
        middle = mask.shape[1] / 2
        centres = {"right": middle * 1.5, "left": middle * 0.5} if mirrored else {
            "right": middle * 0.5, "left": middle * 1.5}
    labels, count = ndimage.label(mask)
    if count == 0:
        return {side: np.zeros_like(mask) for side in SIDES}
    columns = np.broadcast_to(np.arange(mask.shape[1], dtype=np.float32), mask.shape)
    centroid = np.asarray(ndimage.mean(columns, labels, index=np.arange(1, count + 1)))
    # one lookup per label instead of one full-image pass per region
    is_right = np.zeros(count + 1, dtype=bool)
    is_right[1:] = np.abs(centroid - centres["right"]) <= np.abs(centroid - centres["left"])
    right = is_right[labels]
    return {"right": right, "left": mask & ~right}


def _lung_centres(segments: Mapping[str, Segment]) -> dict[str, float] | None:
    centres = {}
    for side in SIDES:
        lung = segments.get(f"{side}_lung")
        if lung is None or lung.pixel_count == 0:
            return None
        centres[side] = float(np.nonzero(lung.mask.any(axis=0))[0].mean())
    return centres
