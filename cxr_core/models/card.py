"""Model cards: the JSON beside each set of weights that says what they are and how made.

A model lives in ``resources/models/<name>/`` as ``model.json`` (the card) and the weights
file it names (an fp16 ``state_dict``), whose sha256 the card records and the loader checks.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cxr_core.models.networks import build_network

CARD_NAME = "model.json"
MODELS_DIR_ENV = "CXR_MODELS_DIR"


def default_models_dir() -> Path:
    """``$CXR_MODELS_DIR`` or the repository's ``resources/models``."""
    configured = os.environ.get(MODELS_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "resources" / "models"


@dataclass
class ModelCard:
    """What a set of weights is: architecture, input, labels, provenance and figures."""

    name: str
    version: str
    task: str
    architecture: str
    network_kwargs: dict[str, Any]
    input_size: tuple[int, int]
    labels: list[str]
    weights_file: str = "weights.pt"
    weights_sha256: str = ""
    normalization: str = "percentile_0.5_99.5_to_unit"
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        data = json.loads(Path(path).read_text())
        data["input_size"] = tuple(data["input_size"])
        return cls(**data)

    def save(self, path: Path) -> None:
        data = self.__dict__ | {"input_size": list(self.input_size)}
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")

    @property
    def identifier(self) -> str:
        """``name@version``, the string written into SEG/SR algorithm identification."""
        return f"{self.name}@{self.version}"

    def build(self) -> torch.nn.Module:
        return build_network(self.architecture, self.network_kwargs)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(network: torch.nn.Module, card: ModelCard, directory: Path) -> Path:
    """Write fp16 weights and the card (with their sha256) into ``directory``.

    The network's own weights are rounded to the saved fp16 values, so figures computed
    with it afterwards (the card's test metrics) describe exactly the shipped model.
    """
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / card.weights_file
    state = {key: value.detach().to("cpu").half() if value.is_floating_point() else value
             for key, value in network.state_dict().items()}
    torch.save(state, weights_path)
    network.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    card.weights_sha256 = file_sha256(weights_path)
    card.save(directory / CARD_NAME)
    return directory


def load_model(
    name_or_dir: str | Path, *, models_dir: Path | None = None, device: str = "cpu"
) -> tuple[torch.nn.Module, ModelCard]:
    """Load a model by name (from the models directory) or from a folder; eval mode, fp32."""
    directory = Path(name_or_dir)
    if not (directory / CARD_NAME).is_file():
        directory = (models_dir or default_models_dir()) / str(name_or_dir)
    card_path = directory / CARD_NAME
    if not card_path.is_file():
        raise FileNotFoundError(f"model: no {CARD_NAME} in {directory}")
    card = ModelCard.load(card_path)
    weights_path = directory / card.weights_file
    if card.weights_sha256 and file_sha256(weights_path) != card.weights_sha256:
        raise ValueError(f"model {card.name}: {weights_path.name} does not match its card's sha256")
    network = card.build()
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    network.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return network.to(device).eval(), card
