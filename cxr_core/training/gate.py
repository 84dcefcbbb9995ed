"""``cxr train gate``: the chest gate (what an image shows, which way round it is).

One small MONAI DenseNet reads the whole image at 128 px and has eight outputs: content
(frontal chest / lateral chest / other, softmax), rotation (0/90/180/270 degrees,
softmax) and mirrored (sigmoid). Frontal chests are drawn in random quarter turns and
mirrored at random, so the orientation labels come free; every image also gets the
affine and intensity jitter of the other models and, at random, an inversion (the gate
runs before the lungs stage decides the polarity). Content classes are drawn in fixed
shares, so 19 training laterals are not drowned by 1,745 frontal chests.

Thresholds (the card's ``runtime.gate``) are chosen on the val split: the frontal
threshold refuses at most :data:`TARGET_FALSE_REFUSAL` of val frontal chests, the rotation
threshold turns at most that share of upright ones, and the mirror threshold swaps the
sides of at most :data:`TARGET_FALSE_MIRROR` of unmirrored ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cxr_core.models import (
    GateRules,
    ModelCard,
    NetworkSpec,
    RuntimeSettings,
    build_network,
    save_model,
)
from cxr_core.preprocess import ToModelInput
from cxr_core.stages.gate import GATE_MODEL, ChestGate
from cxr_core.training.augment import Augment, RandomAffineIntensity
from cxr_core.training.gate_data import (
    CONTENT,
    FRONTAL,
    LABELS,
    UNSEEN_SOURCES,
    GateSample,
    conditioned,
    gate_samples,
)
from cxr_core.training.gate_evaluate import evaluate_gate, orientation_variant
from cxr_core.training.loop import TrainConfig, train
from cxr_core.training.plots import plot_curves
from cxr_core.training.provenance import (
    base_card,
    carried_description,
    make_provenance,
    next_version,
)

log = logging.getLogger(__name__)

SIZE = 128
NETWORK = {
    "spatial_dims": 2, "in_channels": 1, "out_channels": len(LABELS),
    "init_features": 16, "growth_rate": 12, "block_config": [4, 8, 8],
}
CONTENT_SHARES = {"frontal": 0.5, "lateral": 0.15, "other": 0.35}
"""Share of each content class among the drawn training images."""
UPRIGHT_SHARE = 0.4
"""Share of frontal chests drawn upright; the three turns share the rest."""
MIRRORED_SHARE = 0.3
INVERTED_SHARE = 0.1
TARGET_FALSE_REFUSAL = 0.005
"""Val share of frontal chests the frontal and rotation thresholds may refuse."""
TARGET_FALSE_MIRROR = 0.001
"""Val share of frontal chests the mirror threshold may swap sides on: a wrong swap puts
every side in the outputs on the wrong side, so this one is stricter (and the engine only
flags, without swapping, what lies between 0.5 and it)."""


# ------------------------------------------------------------------------------ data


def load_images(samples: Sequence[GateSample], size: int = SIZE) -> torch.Tensor:
    """Every sample as the gate sees it: padding filled, ``(N, 1, size, size)`` in 0..1."""
    to_input = ToModelInput((size, size))
    return torch.cat([to_input(conditioned(s.load())) for s in tqdm(
        samples, desc="reading", unit="image", leave=False)])


def orient(images: torch.Tensor, turns: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
    """Mirror (left-right) where ``mirrored``, then turn ``turns`` quarter turns
    counter-clockwise, per image of a ``(N, 1, h, w)`` batch of square images."""
    out = torch.where(mirrored.view(-1, 1, 1, 1), images.flip(-1), images)
    return torch.stack([torch.rot90(image, int(k), dims=(-2, -1))
                        for image, k in zip(out, turns, strict=True)])


def targets_for(content: torch.Tensor, turns: torch.Tensor,
                mirrored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets, known)`` ``(N, 8)``: orientation is known for frontal chests only."""
    n = content.shape[0]
    targets = torch.zeros(n, len(LABELS))
    targets[torch.arange(n), content] = 1.0
    targets[torch.arange(n), 3 + turns] = 1.0
    targets[:, 7] = mirrored.float()
    known = torch.zeros(n, len(LABELS))
    known[:, :3] = 1.0
    known[:, 3:] = (content == CONTENT.index(FRONTAL)).float().view(n, 1)
    return targets, known


@dataclass
class GateTensors:
    """Images with their content; orientation is drawn per batch (training) or fixed per
    image (validation, :func:`orientation_variant`)."""

    images: torch.Tensor
    content: torch.Tensor
    fixed_turns: torch.Tensor
    fixed_mirrored: torch.Tensor

    @classmethod
    def of(cls, samples: Sequence[GateSample], images: torch.Tensor) -> GateTensors:
        content = torch.tensor([CONTENT.index(s.content) for s in samples])
        variants = [orientation_variant(s.key) if s.content == FRONTAL else (0, False)
                    for s in samples]
        return cls(images, content, torch.tensor([v[0] for v in variants]),
                   torch.tensor([v[1] for v in variants]))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def targets(self) -> torch.Tensor:
        return targets_for(self.content, self.fixed_turns, self.fixed_mirrored)[0]

    @property
    def known(self) -> torch.Tensor:
        return targets_for(self.content, self.fixed_turns, self.fixed_mirrored)[1]

    def inputs(self) -> torch.Tensor:
        return orient(self.images, self.fixed_turns, self.fixed_mirrored)

    def batch(self, index: torch.Tensor, augment: Augment, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = len(index)
        images, _ = augment(self.images[index], torch.zeros(n, 1, 1, 1), generator)
        inverted = torch.rand(n, generator=generator) < INVERTED_SHARE
        images = torch.where(inverted.view(n, 1, 1, 1), 1 - images, images)
        upright = torch.rand(n, generator=generator) < UPRIGHT_SHARE
        turns = torch.where(upright, 0, torch.randint(1, 4, (n,), generator=generator))
        mirrored = torch.rand(n, generator=generator) < MIRRORED_SHARE
        targets, known = targets_for(self.content[index], turns, mirrored)
        return orient(images, turns, mirrored), targets, known


def gate_loss(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Content cross-entropy + rotation cross-entropy and mirrored BCE on frontal chests."""
    content = F.cross_entropy(logits[:, :3], targets[:, :3].argmax(dim=1))
    frontal = known[:, 3] > 0
    if not frontal.any():
        return content
    rotation = F.cross_entropy(logits[frontal, 3:7], targets[frontal, 3:7].argmax(dim=1))
    mirrored = F.binary_cross_entropy_with_logits(logits[frontal, 7], targets[frontal, 7])
    return content + rotation + mirrored


def gate_validation(logits: torch.Tensor, targets: torch.Tensor,
                    known: torch.Tensor) -> tuple[float, dict[str, float]]:
    """Selection score: the mean of balanced content accuracy, rotation accuracy and
    mirror accuracy (the last two on frontal chests)."""
    content = targets[:, :3].argmax(dim=1)
    predicted = logits[:, :3].argmax(dim=1)
    recalls = [float((predicted[content == c] == c).float().mean())
               for c in range(3) if (content == c).any()]
    frontal = known[:, 3] > 0
    rotation = float((logits[frontal, 3:7].argmax(dim=1)
                      == targets[frontal, 3:7].argmax(dim=1)).float().mean())
    mirror = float(((logits[frontal, 7] > 0) == (targets[frontal, 7] > 0.5)).float().mean())
    balanced = sum(recalls) / len(recalls)
    score = (balanced + rotation + mirror) / 3
    figures = {"val_content_balanced_accuracy": balanced, "val_rotation_accuracy": rotation,
               "val_mirror_accuracy": mirror, "val_score_0": score}
    return score, figures


def gate_config(**flags: Any) -> TrainConfig:
    """The training configuration of the gate (flags override epochs, rate...)."""
    return TrainConfig(batch_size=32, learning_rate=3e-3, weight_decay=1e-4, epochs=30,
                       patience=8, max_minutes=30.0, loss=gate_loss,
                       validation=gate_validation,
                       augment=RandomAffineIntensity(rotate_degrees=10.0, scale=(0.8, 1.2),
                                                     shift=0.1, gamma=(0.6, 1.6),
                                                     noise=0.03, detail=1.0),
                       warmup_fraction=0.1, min_batch_size=2, predict_batch_size=64,
                       label="training gate").but(**flags)


def _sample_weights(content: torch.Tensor) -> torch.Tensor:
    weights = torch.zeros(len(content))
    for index, name in enumerate(CONTENT):
        chosen = content == index
        if chosen.any():
            weights[chosen] = CONTENT_SHARES[name] / float(chosen.sum())
    return weights


# -------------------------------------------------------------------------- training


def train_gate(*, data_root: Path, out_dir: Path, command: str, config: TrainConfig,
               version: str | None = None) -> ModelCard:
    """Train the gate, choose its thresholds on val, evaluate on test (and on sources it
    never saw), save weights + card + figures into ``out_dir``."""
    samples = gate_samples(data_root)
    splits = {s: [x for x in samples if x.split == s] for s in ("train", "val", "test")}
    tensors = {split: GateTensors.of(items, load_images(items))
               for split, items in splits.items() if split != "test"}
    config = config.but(sample_weights=_sample_weights(tensors["train"].content))
    torch.manual_seed(config.seed)
    network = build_network("DenseNet", NETWORK)
    started = time.monotonic()
    network, history = train(network, tensors["train"], tensors["val"], config)
    minutes = (time.monotonic() - started) / 60
    base = base_card(GATE_MODEL)
    card = ModelCard(
        name=GATE_MODEL, version=next_version(base, version), task="classification",
        network=NetworkSpec(architecture="DenseNet", kwargs=NETWORK, input_size=(SIZE, SIZE)),
        labels=list(LABELS),
        provenance=make_provenance(
            command=command, datasets=_datasets(), counts=_counts(samples),
            selection=SELECTION, seed=config.seed, minutes=minutes, epochs_run=len(history),
            details=_details(config)),
        description=carried_description(base, GATE_MODEL, "classification"),
        runtime=RuntimeSettings(gate=choose_rules(network, tensors["val"])))
    save_model(network, card, out_dir, history=history)
    plot_curves(history, ["content, rotation and mirror accuracy"],
                out_dir / "training_curves.png", metric="score")
    gate = ChestGate(network, card)
    card.evaluation = evaluate_gate(gate, splits["test"], out_dir) | {
        "evaluated_by": "cxr train gate"}
    save_model(network, card, out_dir, history=history)
    return card


SELECTION = (
    "frontal: every shared chest set's frontal rows by its own patient-disjoint split; "
    "lateral: covid_cxr_v7lungs lateral rows; other: covid_cxr_v7lungs CT rows, synthetic "
    "images (noise, gradients, patterns, shapes, documents, limbs; 70/15/15 by hash) and "
    "scikit-image's lfw_subset faces (70/15/15 by hash). Never trained on: "
    + ", ".join(UNSEEN_SOURCES) + " (test only)")


def choose_rules(network: torch.nn.Module, val: GateTensors) -> GateRules:
    """Thresholds from the val split: each acts on at most :data:`TARGET_FALSE_REFUSAL`
    of the frontal chests it should leave alone (and never below 0.5)."""
    network.eval()
    frontal = val.content == CONTENT.index(FRONTAL)
    with torch.inference_mode():
        upright = network(val.images[frontal])
    p_frontal = torch.softmax(upright[:, :3], dim=1)[:, 0].numpy()
    p_turned = 1 - torch.softmax(upright[:, 3:7], dim=1)[:, 0].numpy()
    p_mirrored = torch.sigmoid(upright[:, 7]).numpy()
    return GateRules(
        frontal_min=round(min(0.5, float(np.quantile(p_frontal, TARGET_FALSE_REFUSAL))), 4),
        rotation_min=round(max(0.5, float(np.quantile(p_turned, 1 - TARGET_FALSE_REFUSAL))),
                           4),
        mirrored_min=round(max(0.5, float(np.quantile(p_mirrored, 1 - TARGET_FALSE_MIRROR))),
                           4))


def _datasets() -> list[str]:
    from cxr_core.training.gate_data import CHEST_SETS
    from cxr_core.training.provenance import SHARED_DATA

    return ([f"{SHARED_DATA}/{name}/SOURCE.md" for name in CHEST_SETS]
            + ["synthetic (cxr_core/training/gate_synthetic.py)",
               "scikit-image lfw_subset (LFW, Huang et al. 2007; BSD-licensed package data)",
               "test only: scikit-image sample images, pydicom test files, "
               f"{SHARED_DATA}/dicom_samples RG3 (NEMA WG04)"])


def _counts(samples: Sequence[GateSample]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for sample in samples:
        bucket = counts.setdefault(sample.split, {})
        bucket[sample.content] = bucket.get(sample.content, 0) + 1
    return counts


def _details(config: TrainConfig) -> dict[str, Any]:
    return {"batch_size": config.batch_size, "learning_rate": config.learning_rate,
            "content_shares": CONTENT_SHARES, "upright_share": UPRIGHT_SHARE,
            "mirrored_share": MIRRORED_SHARE, "inverted_share": INVERTED_SHARE,
            "augmentation": "rotation +-10 deg, scale 0.8-1.2, shift 0.1, gamma 0.6-1.6, "
            "contrast, noise, blur/sharpen; random quarter turns and mirroring (labelled) "
            "and inversion",
            "threshold_rule": f"frontal and rotation thresholds act on at most "
            f"{TARGET_FALSE_REFUSAL:.1%} of val frontal chests they should leave alone, the "
            f"mirror threshold on at most {TARGET_FALSE_MIRROR:.1%}; none is below 0.5 "
            "(frontal: never above 0.5)"}
