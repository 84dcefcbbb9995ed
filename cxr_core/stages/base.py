"""The contract every engine stage keeps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

from cxr_core.analysis import Analysis
from cxr_core.models import ModelCard


class Stage(Protocol):
    """One step of the engine.

    Contract: ``run`` may add segments, measurements, findings and quality flags to the
    analysis it is given, and must not change what earlier stages wrote (the lungs stage,
    always first, may replace the radiograph's pixels when it decides their polarity);
    it may raise :class:`~cxr_core.io.RefusedInput` for an input it cannot answer.
    ``card`` is the model card of the model it runs (recorded in every output), and
    ``networks`` every network it holds, so the engine can place them on a device.
    """

    name: str
    card: ModelCard

    @property
    def networks(self) -> Sequence[torch.nn.Module]: ...

    def run(self, analysis: Analysis) -> None: ...


class StageFactory(Protocol):
    """Builds a stage from the models folder, loading its weights once onto ``device``."""

    def __call__(self, models_dir: Path, *, device: str | torch.device) -> Stage: ...
