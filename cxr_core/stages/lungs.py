"""The lungs stage: right lung, left lung and heart, the polarity decision, the lung
measurements and their plausibility.

It runs first: every later stage reads its lungs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from cxr_core.analysis import Analysis, Segment
from cxr_core.flags import QualityFlag
from cxr_core.measure import area_measurements, cardiothoracic_ratio, lung_ratio, make_segment
from cxr_core.quality import check_polarity, inverted
from cxr_core.segmentation import SegmentationOutput, Segmenter

LUNG_MODEL = "lung_seg"
# A frontal chest radiograph shows lungs over roughly 15-50 % of the image.
MIN_LUNG_FRACTION = 0.05
# One lung below a tenth of the other is not a plausible pair.
MIN_LUNG_BALANCE = 0.1
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
        segments = {name: make_segment(name, mask, radiograph.spacing)
                    for name, mask in output.masks.items()}
        for flag in plausibility_flags(segments, radiograph.shape):
            analysis.flag(flag)
        analysis.segments.update(segments)
        analysis.measurements += area_measurements(segments, radiograph.spacing)
        analysis.measurements += [m for m in (
            lung_ratio(segments), cardiothoracic_ratio(segments, radiograph.view_position))
            if m is not None]

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
        analysis.radiograph = dataclasses.replace(radiograph, pixels=negative)
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
