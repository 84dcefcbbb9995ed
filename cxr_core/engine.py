"""The engine: a Radiograph goes through a list of stages and comes out an Analysis.

    Radiograph -> padding filled -> gate -> lungs -> findings -> pneumothorax -> Analysis

Each stage (:mod:`cxr_core.stages`) runs one model; the engine loads them once, places
every network on one device, runs them in order, times them and names the stage in any
error. Before the stages, frames of one grey value (:mod:`cxr_core.padding`) are cropped
away and corners filled from the image's edge: the stages see that, the outputs (masks,
heat maps, pictures) are on the image as received.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from cxr_core.analysis import Analysis, ModelRef
from cxr_core.explain import HeatMap
from cxr_core.flags import QualityFlag
from cxr_core.io import RefusedInput
from cxr_core.models import ModelCard, default_models_dir
from cxr_core.models.versions import pinned_models_dir
from cxr_core.padding import condition, paste
from cxr_core.preprocess import forget_scaled_image, read_only
from cxr_core.quality import inverted
from cxr_core.radiograph import Radiograph
from cxr_core.stages.base import Stage, StageFactory
from cxr_core.stages.findings import FINDINGS_MODEL, FindingsStage
from cxr_core.stages.gate import GATE_MODEL, GateStage
from cxr_core.stages.lungs import LUNG_MODEL, LungStage
from cxr_core.stages.pneumothorax import MODEL_NAME as PNEUMOTHORAX_MODEL
from cxr_core.stages.pneumothorax import PneumothoraxStage
from cxr_core.timing import timed

STAGES: Mapping[str, StageFactory] = {
    GateStage.name: GateStage.load,
    LungStage.name: LungStage.load,
    FindingsStage.name: FindingsStage.load,
    PneumothoraxStage.name: PneumothoraxStage.load,
}
"""Every stage the engine knows, by name."""
DEFAULT_STAGES = (GateStage.name, LungStage.name, FindingsStage.name, PneumothoraxStage.name)
"""The stages a plain ``Engine()`` runs, in order."""
STAGE_MODELS: Mapping[str, str] = {
    GateStage.name: GATE_MODEL, LungStage.name: LUNG_MODEL,
    FindingsStage.name: FINDINGS_MODEL, PneumothoraxStage.name: PNEUMOTHORAX_MODEL,
}
"""The model folder each stage loads from the models folder."""


class StageError(RuntimeError):
    """A stage failed on an input (not a refusal): the message names the stage."""

    def __init__(self, stage: str, error: Exception) -> None:
        super().__init__(f"stage {stage}: {type(error).__name__}: {error}")
        self.stage = stage


class Engine:
    """Holds the loaded models; :meth:`analyze` is cheap to call many times.

    Parameters
    ----------
    models_dir:
        Folder holding the model folders (default: the shipped models).
    device:
        Where every network runs (``"cpu"``, ``"cuda"``...); see :meth:`to`.
    stages:
        Which stages to run, in order (default :data:`DEFAULT_STAGES`): the gate, if
        run, first; then ``lungs``, which every later stage reads.
    fill_padding:
        Fill frames and corners before the stages (default); off only to measure what
        the filling changes.
    pins:
        Model versions to run instead of the active ones, by model name
        (``{"lung_seg": "1.0.0"}``): the active version when it is that one, else its
        kept copy (:mod:`cxr_core.models.versions`).

    Raises
    ------
    FileNotFoundError
        When a pinned version is not available.
    """

    def __init__(self, *, models_dir: Path | None = None, device: str | torch.device = "cpu",
                 stages: Sequence[str] = DEFAULT_STAGES, fill_padding: bool = True,
                 pins: Mapping[str, str] | None = None, threads: int | None = None) -> None:
        _check_stage_names(stages)
        if threads is not None and threads < 1:
            raise ValueError(f"threads: at least 1, got {threads}")
        self.threads = threads
        self.fill_padding = fill_padding
        self.models_dir = Path(models_dir) if models_dir else default_models_dir()
        self.device = torch.device(device)
        self.pins = _check_pins(pins or {}, stages)
        self.stages: list[Stage] = [STAGES[name](self._folder_for(name), device=self.device)
                                    for name in stages]

    def _folder_for(self, stage: str) -> Path:
        """The models folder ``stage`` loads from: its pinned version's, or the active."""
        model = STAGE_MODELS[stage]
        if model not in self.pins:
            return self.models_dir
        return pinned_models_dir(self.models_dir, model, self.pins[model])

    @property
    def cards(self) -> list[ModelCard]:
        """The card of each stage's model, in stage order."""
        return [stage.card for stage in self.stages]

    @property
    def model_refs(self) -> list[ModelRef]:
        return [ModelRef(id=card.identifier, task=card.task, sha256=card.weights_sha256[:16])
                for card in self.cards]

    def stage(self, name: str) -> Stage:
        """The stage called ``name``.

        Raises
        ------
        KeyError
            If this engine does not run it.
        """
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"name: this engine runs no stage {name!r}")

    def networks(self) -> dict[str, list[torch.nn.Module]]:
        """Every network, by stage name."""
        return {stage.name: list(stage.networks) for stage in self.stages}

    def to(self, device: str | torch.device) -> Engine:
        """Move every stage's network to ``device`` (inputs follow, outputs come back)."""
        self.device = torch.device(device)
        for networks in self.networks().values():
            for network in networks:
                network.to(self.device)
        return self

    def analyze(self, radiograph: Radiograph) -> Analysis:
        """Run every stage on ``radiograph``.

        Raises
        ------
        RefusedInput
            When a stage will not answer for this input.
        StageError
            When a stage fails; the message names it.
        """
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        # the stages see a read-only view: their models then share one scaled input
        analysis = Analysis(radiograph=dataclasses.replace(
            radiograph, pixels=read_only(radiograph.pixels)), models=self.model_refs)
        box = None
        if self.fill_padding:
            with timed(analysis.timings, "padding"):
                pixels, box = condition(radiograph.pixels)
            if box is not None:
                analysis.radiograph = dataclasses.replace(radiograph, pixels=read_only(pixels))
                analysis.flag(QualityFlag.PADDING_FILLED)
        if radiograph.mirrored:
            analysis.flag(QualityFlag.MIRRORED_ORIENTATION)
        if radiograph.is_lateral:
            analysis.flag(QualityFlag.LATERAL_VIEW)
        if radiograph.legacy_format:
            analysis.flag(QualityFlag.LEGACY_FILE_FORMAT)
        try:
            self._run_stages(analysis)
        finally:
            forget_scaled_image()
        if box is not None:
            _uncrop(analysis, radiograph, box)
        return analysis


    def _run_stages(self, analysis: Analysis) -> None:
        for stage in self.stages:
            with timed(analysis.timings, stage.name):
                try:
                    stage.run(analysis)
                except RefusedInput:
                    raise
                except Exception as error:
                    raise StageError(stage.name, error) from error


def _uncrop(analysis: Analysis, received: Radiograph, box: tuple[slice, slice]) -> None:
    """Put masks and heat maps back on the received image's grid, and show it as received
    (in the polarity the lungs stage chose)."""
    shape = received.shape
    for segment in analysis.segments.values():
        segment.mask = paste(segment.mask, box, shape)
    for finding in analysis.findings:
        heat = finding.heat
        if isinstance(heat, HeatMap):
            finding.heatmap = heat.pasted(box, shape)  # still lazy
        elif isinstance(heat, np.ndarray):
            finding.heatmap = paste(heat, box, shape)
    shown = (inverted(received.pixels)
             if QualityFlag.PHOTOMETRIC_MISMATCH in analysis.quality_flags
             else received.pixels)
    analysis.radiograph = dataclasses.replace(analysis.radiograph, pixels=shown)


def _check_pins(pins: Mapping[str, str], stages: Sequence[str]) -> dict[str, str]:
    run = {STAGE_MODELS[stage] for stage in stages}
    unknown = sorted(set(pins) - run)
    if unknown:
        raise ValueError(f"pins: this engine runs no model {unknown}; it runs "
                         f"{', '.join(sorted(run))}")
    return dict(pins)


def _check_stage_names(stages: Sequence[str]) -> None:
    unknown = [name for name in stages if name not in STAGES]
    if unknown:
        raise ValueError(f"stages: unknown {unknown}; known: {', '.join(STAGES)}")
    if len(set(stages)) != len(stages):
        raise ValueError(f"stages: each stage runs once, got {list(stages)}")
    after_gate = list(stages[1:] if stages and stages[0] == GateStage.name else stages)
    if not after_gate or after_gate[0] != LungStage.name or GateStage.name in after_gate:
        raise ValueError(f"stages: the gate (if any) first, then {LungStage.name!r}; got "
                         f"{list(stages)}")
