"""The chest gate: is this a frontal chest radiograph, which way round? Runs first.

A small classifier reads the whole image and says three things: what it shows (a frontal
chest radiograph, a lateral chest view, or something else), whether it is turned a
quarter or half turn, and whether it is mirrored (the patient's right on the image's
right). The stage

* refuses what is not a frontal chest radiograph, and frontal chests turned sideways or
  upside down, with a one-line reason and the probability;
* lets the anatomy decide the sides when it clearly disagrees with the header's
  PatientOrientation, and flags it (:class:`~cxr_core.flags.QualityFlag`); when it only
  leans that way, the header's sides stay and a flag says they are uncertain.

Its thresholds are the card's ``runtime.gate`` (chosen on the val split).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxr_core.analysis import Analysis
from cxr_core.flags import QualityFlag
from cxr_core.io import RefusedInput
from cxr_core.models import GateRules, ModelCard, load_model
from cxr_core.models.networks import network_device
from cxr_core.preprocess import ToModelInput

GATE_MODEL = "chest_gate"
CONTENT = ("frontal", "lateral", "other")
ROTATIONS = (0, 90, 180, 270)
"""Quarter turns counter-clockwise (``numpy.rot90``) the image shows."""
LABELS = (*CONTENT, *(f"rotated_{r}" for r in ROTATIONS), "mirrored")
DEFAULT_RULES = GateRules(frontal_min=0.5, rotation_min=0.5, mirrored_min=0.5)
_TURNS = {90: "turned 90 degrees counter-clockwise", 180: "upside down",
          270: "turned 90 degrees clockwise"}


@dataclass(frozen=True)
class GateReading:
    """What the gate network says about one image."""

    content: dict[str, float]
    """Probability of each of :data:`CONTENT` (they sum to 1)."""
    rotation: int
    """The most probable of :data:`ROTATIONS`."""
    rotation_probability: float
    mirrored_probability: float

    def summary(self) -> dict[str, float]:
        return {"frontal_chest_probability": round(self.content["frontal"], 4),
                "rotation_degrees": float(self.rotation),
                "rotation_probability": round(self.rotation_probability, 4),
                "mirrored_probability": round(self.mirrored_probability, 4)}


class ChestGate:
    """The gate network with its card's input size, normalisation and thresholds."""

    def __init__(self, network: torch.nn.Module, card: ModelCard) -> None:
        if tuple(card.labels) != LABELS:
            raise ValueError(f"card: model {card.identifier} has labels {card.labels}, "
                             f"a gate needs {list(LABELS)}")
        self.network = network.eval()
        self.card = card
        self.rules = card.runtime.gate or DEFAULT_RULES
        self.to_input = ToModelInput(card.input_size, card.network.normalization.percentiles,
                                     card.network.normalization.method)

    @classmethod
    def load(cls, name_or_dir: str | Path = GATE_MODEL, *,
             device: str | torch.device = "cpu") -> ChestGate:
        return cls(*load_model(name_or_dir, device=device))

    def read(self, pixels: np.ndarray) -> GateReading:
        return self.read_batch(self.to_input(pixels))[0]

    def read_batch(self, network_input: torch.Tensor) -> list[GateReading]:
        """Readings of a ``(N, 1, h, w)`` batch of network inputs."""
        with torch.inference_mode():
            logits = self.network(network_input.to(network_device(self.network))).cpu()
        content = torch.softmax(logits[:, :3], dim=1)
        rotation = torch.softmax(logits[:, 3:7], dim=1)
        mirrored = torch.sigmoid(logits[:, 7])
        readings = []
        for row in range(logits.shape[0]):
            turn = int(rotation[row].argmax())
            readings.append(GateReading(
                content={name: float(content[row, i]) for i, name in enumerate(CONTENT)},
                rotation=ROTATIONS[turn], rotation_probability=float(rotation[row, turn]),
                mirrored_probability=float(mirrored[row])))
        return readings

    def refusal(self, reading: GateReading) -> str | None:
        """Why the image gets no answer, or None to analyse it."""
        if reading.content["frontal"] < self.rules.frontal_min:
            lateral, other = reading.content["lateral"], reading.content["other"]
            what = "lateral view" if lateral > other else "not a chest radiograph"
            return (f"not a frontal chest radiograph ({what}, "
                    f"p={max(lateral, other):.2f})")
        if reading.rotation != 0 and reading.rotation_probability >= self.rules.rotation_min:
            return (f"the chest radiograph is {_TURNS[reading.rotation]} "
                    f"(p={reading.rotation_probability:.2f}): turn it upright and resend it")
        return None

    def mirrored(self, reading: GateReading) -> bool:
        """The anatomy clearly shows the patient's right on the image's right."""
        return reading.mirrored_probability >= self.rules.mirrored_min

    def standard(self, reading: GateReading) -> bool:
        """The anatomy clearly shows the patient's right on the image's left."""
        return reading.mirrored_probability <= 1 - self.rules.mirrored_min

    def sides(self, reading: GateReading, header_mirrored: bool) -> bool | None:
        """Whether the image is mirrored by the anatomy when it is clear, by the header
        when the anatomy agrees or is unclear either way; None when the anatomy leans
        against the header without being clear."""
        if self.mirrored(reading):
            return True
        if self.standard(reading):
            return False
        leans_mirrored = reading.mirrored_probability >= 0.5
        return header_mirrored if leans_mirrored == header_mirrored else None


class GateStage:
    """Engine stage: refuse what is not an upright frontal chest radiograph; take the
    sides from the anatomy."""

    name = "gate"

    def __init__(self, gate: ChestGate) -> None:
        self.gate = gate
        self.card = gate.card

    @classmethod
    def load(cls, models_dir: Path, *, device: str | torch.device = "cpu") -> GateStage:
        """Load ``<models_dir>/chest_gate``."""
        return cls(ChestGate.load(Path(models_dir) / GATE_MODEL, device=device))

    @property
    def networks(self) -> Sequence[torch.nn.Module]:
        return [self.gate.network]

    def run(self, analysis: Analysis) -> None:
        radiograph = analysis.radiograph
        reading = self.gate.read(radiograph.pixels)
        analysis.checks.update(reading.summary())
        refusal = self.gate.refusal(reading)
        if refusal is not None:
            raise RefusedInput(refusal)
        anatomy = self.gate.sides(reading, radiograph.mirrored)
        if anatomy is None:
            analysis.flag(QualityFlag.SIDES_UNCERTAIN)
            return
        if anatomy == radiograph.mirrored:
            return
        analysis.radiograph = dataclasses.replace(radiograph, mirrored=anatomy)
        if anatomy:
            analysis.flag(QualityFlag.MIRRORED_ORIENTATION)
            analysis.flag(QualityFlag.MIRRORED_BY_ANATOMY)
        else:
            analysis.quality_flags.remove(QualityFlag.MIRRORED_ORIENTATION)
            analysis.flag(QualityFlag.ORIENTATION_HEADER_OVERRULED)
