"""The lungs stage: right lung, left lung and heart, the polarity decision, the lung
measurements and their plausibility.

It runs before every other stage but the gate: they all read its lungs. When what the
lung model found does not look like the lungs and heart of a frontal chest radiograph,
the input is refused (:func:`implausible_lungs`): the gate's second line, for what it
lets through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from cxr_core.analysis import Analysis, Measurement, Segment
from cxr_core.flags import QualityFlag
from cxr_core.io import RefusedInput
from cxr_core.mask_quality import quality_measurements
from cxr_core.measure import area_measurements, cardiothoracic_ratio, lung_ratio, make_segment
from cxr_core.preprocess import read_only
from cxr_core.quality import check_polarity, inverted
from cxr_core.segmentation import SegmentationOutput, Segmenter

LUNG_MODEL = "lung_seg"
# A frontal chest radiograph shows lungs over roughly 15-50 % of the image.
MIN_LUNG_FRACTION = 0.05
# One lung below a tenth of the other is not a plausible pair.
MIN_LUNG_BALANCE = 0.1
# What lungs and heart on a frontal chest radiograph look like to the lung model, measured
# on the shared test splits (435 frontal chests) against 163 images that are not chest
# radiographs: these four refuse 0.5 % of the chests and 78 % of the others (the gate
# is the first line).
MAX_UNCERTAINTY = 0.7
"""Unsure pixels per foreground pixel (chests: median 0.2, 99th percentile 0.56)."""
MIN_HEART_CONTRAST = 0.05
"""Median heart minus median lung pixel, as a share of the 1-99 % grey range: the
mediastinum is denser than the lungs (chests: minimum 0.07; test patterns and noise: 0)."""
MIN_LUNG_HEIGHT = 0.3
"""Each lung spans at least this share of the image's height (chests: minimum 0.32)."""
CTR_RANGE = (0.25, 0.85)
"""A cardiothoracic ratio outside this range is not measured but an artefact."""
# An inverted reading must make the model clearly surer of the lungs' outline to win: on
# the shared images the strip heuristic suspects, inverting raised the uncertainty (ratio
# >= 1.02); on the fake MONOCHROME1 file it cut it to 0.41.
POLARITY_UNCERTAINTY_RATIO = 0.6


class LungStage:
    """Segment the lungs and heart, and measure them.

    Parameters
    ----------
    segmenter:
        A segmenter whose card labels ``right_lung``, ``left_lung`` (and ``heart``).
    """

    name = "lungs"

    def __init__(self, segmenter: Segmenter) -> None:
        missing = {"right_lung", "left_lung"} - set(segmenter.card.labels)
        if missing:
            raise ValueError(f"segmenter: model {segmenter.card.identifier} lacks the labels "
                             f"{sorted(missing)}")
        self.segmenter = segmenter
        self.card = segmenter.card

    @classmethod
    def load(cls, models_dir: Path, *, device: str | torch.device = "cpu") -> LungStage:
        return cls(Segmenter.load(Path(models_dir) / LUNG_MODEL, device=device))

    @property
    def networks(self) -> Sequence[torch.nn.Module]:
        return [self.segmenter.network]

    def run(self, analysis: Analysis) -> None:
        output = self._segment_with_polarity(analysis)
        radiograph = analysis.radiograph
        segments = {name: make_segment(name, mask, radiograph.spacing, self.card.identifier,
                                       quality=output.agreement.get(name))
                    for name, mask in output.masks.items()}
        flags = plausibility_flags(segments, radiograph.shape)
        reason = (implausible_lungs(segments, radiograph.pixels, output.uncertainty,
                                    mirrored=radiograph.mirrored)
                  if QualityFlag.LUNGS_NOT_FOUND not in flags else "too little lung")
        if reason is not None:
            raise RefusedInput(f"no plausible lungs found ({reason})")
        for flag in flags:
            analysis.flag(flag)
        analysis.segments.update(segments)
        analysis.measurements += area_measurements(segments, radiograph.spacing)
        analysis.measurements += quality_measurements(segments.values())
        ratio = lung_ratio(segments)
        analysis.measurements += [ratio] if ratio is not None else []
        analysis.measurements += self._plausible_ratio(
            cardiothoracic_ratio(segments, radiograph.view_position), analysis)

    @staticmethod
    def _plausible_ratio(ratio: Measurement | None, analysis: Analysis) -> list[Measurement]:
        if ratio is None:
            return []
        if not CTR_RANGE[0] <= ratio.value <= CTR_RANGE[1]:
            analysis.flag(QualityFlag.IMPLAUSIBLE_MEASUREMENT)
            return []
        return [ratio]

    def _segment_with_polarity(self, analysis: Analysis) -> SegmentationOutput:
        """Segment; if the pixels look like a negative (dense mediastinum darker than the
        lung fields), let the model decide which polarity shows lungs, and flag a mismatch
        with the header when the inverted one wins."""
        radiograph = analysis.radiograph
        output = self.segmenter(radiograph.pixels, mirrored=radiograph.mirrored)
        if check_polarity(radiograph.pixels) != "inverted":
            return output
        negative = inverted(radiograph.pixels)
        alternative = self.segmenter(negative, mirrored=radiograph.mirrored)
        if alternative.uncertainty >= POLARITY_UNCERTAINTY_RATIO * output.uncertainty:
            return output
        analysis.radiograph = dataclasses.replace(radiograph, pixels=read_only(negative))
        analysis.flag(QualityFlag.PHOTOMETRIC_MISMATCH)
        return alternative


def plausibility_flags(segments: Mapping[str, Segment],
                       shape: tuple[int, int]) -> list[QualityFlag]:
    """Flags for lungs too small to be a frontal chest radiograph's, or too unequal."""
    right = segments["right_lung"].pixel_count
    left = segments["left_lung"].pixel_count
    if (right + left) < MIN_LUNG_FRACTION * shape[0] * shape[1]:
        return [QualityFlag.LUNGS_NOT_FOUND]
    if min(right, left) < MIN_LUNG_BALANCE * max(right, left):
        return [QualityFlag.ONE_LUNG_NOT_FOUND]
    return []


def implausible_lungs(segments: Mapping[str, Segment], pixels: np.ndarray,
                      uncertainty: float, *, mirrored: bool) -> str | None:
    """Why the lung model's output is not the lungs and heart of a frontal chest, or None.

    The model always outputs something; on a test pattern, a photo or noise it is unsure,
    the "heart" is no denser than the "lungs", the lungs are short, or right lung, heart
    and left lung are not side by side in that order.
    """
    right, left = segments["right_lung"].mask, segments["left_lung"].mask
    heart = segments["heart"].mask if "heart" in segments else None
    if uncertainty >= MAX_UNCERTAINTY:
        return f"the lung model is unsure of its outlines ({uncertainty:.2f})"
    if min(_height(right), _height(left)) < MIN_LUNG_HEIGHT:
        return "a lung spans too little of the image's height"
    if heart is not None and heart.any():
        low, high = np.percentile(pixels[::4, ::4], (1, 99))
        contrast = (float(np.median(pixels[heart])) - float(np.median(pixels[right | left]))
                    ) / max(float(high - low), 1e-6)
        if contrast < MIN_HEART_CONTRAST:
            return "the heart is no denser than the lungs"
        order = [_centre(right), _centre(heart), _centre(left)]
        if (order != sorted(order)) != mirrored:
            return "right lung, heart and left lung are not side by side"
    return None


def _height(mask: np.ndarray) -> float:
    rows = np.nonzero(mask.any(axis=1))[0]
    return float(rows[-1] - rows[0] + 1) / mask.shape[0] if rows.size else 0.0


def _centre(mask: np.ndarray) -> float:
    columns = np.nonzero(mask.any(axis=0))[0]
    return float(columns.mean()) if columns.size else float("nan")
