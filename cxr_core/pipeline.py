"""The engine: Radiograph -> quality checks -> segmentation -> measurements -> Analysis."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np

from cxr_core.analysis import Analysis
from cxr_core.findings import FindingsStage
from cxr_core.measure import area_measurements, cardiothoracic_ratio, lung_ratio, make_segment
from cxr_core.models import ModelCard, default_models_dir
from cxr_core.pneumothorax import PneumothoraxStage
from cxr_core.quality import PHOTOMETRIC_MISMATCH, POLARITY_SUSPECT
from cxr_core.radiograph import Radiograph
from cxr_core.segmentation import SegmentationOutput, Segmenter

LUNG_MODEL = "lung_seg"
# A frontal chest radiograph shows lungs over roughly 15-50 % of the image.
MIN_LUNG_FRACTION = 0.05
# An inverted reading must make the model clearly surer of the lungs' outline to win: on
# the shared images the heuristic suspects, inverting raised the uncertainty (ratio >= 1.02);
# on the fake MONOCHROME1 file it cut it to 0.41.
POLARITY_UNCERTAINTY_RATIO = 0.6

LUNGS_NOT_FOUND = "lungs_not_found"
ONE_LUNG_NOT_FOUND = "one_lung_not_found"


class Stage(Protocol):
    """A step after lung segmentation (findings, pneumothorax...).

    Contract: ``run`` may add segments, measurements, findings and quality flags to the
    analysis it is given, and must not change what earlier stages wrote; ``card`` is the
    model card of the model it runs (recorded in every output).
    """

    name: str
    card: ModelCard

    def run(self, analysis: Analysis) -> None: ...


StageFactory = Callable[[Path], Stage]
"""Builds a stage from the models folder (loading its weights once)."""

STAGE_FACTORIES: list[StageFactory] = []
"""Stages run after the lungs, in order; later issues append theirs here."""
STAGE_FACTORIES.append(FindingsStage)
STAGE_FACTORIES.append(PneumothoraxStage.load)


class Engine:
    """Holds the loaded models; :meth:`analyze` is cheap to call many times.

    Parameters
    ----------
    models_dir:
        Folder holding the model folders (default: ``resources/models``).
    """

    def __init__(self, *, models_dir: Path | None = None) -> None:
        self.models_dir = Path(models_dir) if models_dir else default_models_dir()
        self.lung = Segmenter.load(self.models_dir / LUNG_MODEL)
        self.stages: list[Stage] = [factory(self.models_dir) for factory in STAGE_FACTORIES]

    @property
    def model_summaries(self) -> list[dict[str, str]]:
        cards = [self.lung.card] + [stage.card for stage in self.stages]
        return [{"id": c.identifier, "task": c.task, "sha256": c.weights_sha256[:16]}
                for c in cards]

    def analyze(self, radiograph: Radiograph) -> Analysis:
        timings: dict[str, float] = {}
        flags = [f for f in radiograph.quality_flags if f != POLARITY_SUSPECT]
        with _timed(timings, "segment"):
            radiograph, lungs, flags = self._segment_with_polarity(radiograph, flags)
        with _timed(timings, "measure"):
            segments = {name: make_segment(name, mask, radiograph.spacing)
                        for name, mask in lungs.masks.items()}
            flags += _lung_plausibility_flags(segments, radiograph.shape)
            measurements = area_measurements(segments, radiograph.spacing)
            measurements += [m for m in (lung_ratio(segments), cardiothoracic_ratio(
                segments, radiograph.view_position)) if m is not None]
        analysis = Analysis(radiograph=radiograph, segments=segments, measurements=measurements,
                            quality_flags=flags, models=self.model_summaries, timings=timings)
        for stage in self.stages:
            with _timed(timings, stage.name):
                stage.run(analysis)
        return analysis

    def _segment_with_polarity(
        self, radiograph: Radiograph, flags: list[str]
    ) -> tuple[Radiograph, SegmentationOutput, list[str]]:
        """Segment; if the reader suspected a negative image, let the model decide which
        polarity shows lungs, and flag a mismatch when the inverted one wins."""
        mirrored = "mirrored_orientation" in flags
        output = self.lung(radiograph.pixels, mirrored=mirrored)
        if POLARITY_SUSPECT not in radiograph.quality_flags:
            return radiograph, output, flags
        inverted = radiograph.pixels.max() + radiograph.pixels.min() - radiograph.pixels
        alternative = self.lung(inverted, mirrored=mirrored)
        if alternative.uncertainty < POLARITY_UNCERTAINTY_RATIO * output.uncertainty:
            radiograph = dataclasses.replace(radiograph, pixels=inverted.astype(np.float32),
                                             quality_flags=[*flags, PHOTOMETRIC_MISMATCH])
            return radiograph, alternative, [*flags, PHOTOMETRIC_MISMATCH]
        return radiograph, output, flags


def _lung_plausibility_flags(segments: dict, shape: tuple[int, int]) -> list[str]:
    right = segments["right_lung"].pixel_count
    left = segments["left_lung"].pixel_count
    if (right + left) < MIN_LUNG_FRACTION * shape[0] * shape[1]:
        return [LUNGS_NOT_FOUND]
    if min(right, left) < 0.1 * max(right, left):
        return [ONE_LUNG_NOT_FOUND]
    return []


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - started, 4)


def timed_call(timings: dict[str, float], stage: str, function: Callable, *args, **kwargs):
    """Run ``function`` and record its wall time under ``stage``."""
    with _timed(timings, stage):
        return function(*args, **kwargs)
