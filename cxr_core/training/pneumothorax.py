"""``cxr train pneumothorax``: a lesion segmentation model trained against its shortcut.

The positives come from SIIM-ACR and most negatives from NIH, so the training fights the
image source as a cue: a weighted sampler (half the draws positive), lesion swap (lesions
moved into negatives and covered in positives, :class:`~cxr_core.training.augment.LesionSwap`),
blur/sharpen jitter, and a selection score that an empty output cannot win. The sources
are in :mod:`~cxr_core.training.pneumothorax_sources`, the evaluation and source check in
:mod:`~cxr_core.training.pneumothorax_evaluate`.

The decision rule (minimum area, thorax gate) and the post-processing are runtime
settings the training does not fit: they come from the base card (the shipped model's
or the ``init_from`` pneumothorax model's) unless set in :class:`PtxTrainOptions`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cxr_core.models import (
    ModelCard,
    NetworkSpec,
    PostProcess,
    RuntimeSettings,
    build_network,
    load_model,
    save_model,
)
from cxr_core.segmentation import Segmenter
from cxr_core.stages.pneumothorax import DEFAULT_RULE, PneumothoraxDetector
from cxr_core.training.augment import Chain, LesionSwap, RandomAffineIntensity
from cxr_core.training.data import KNOWN_PRESENT, SegmentationTensors, load_tensors
from cxr_core.training.loop import DiceValidation, History, TrainConfig, train
from cxr_core.training.losses import LesionMilLoss, MaskedBceDiceLoss
from cxr_core.training.plots import plot_curves
from cxr_core.training.pneumothorax_card import limits_statement
from cxr_core.training.pneumothorax_evaluate import evaluate_pneumothorax
from cxr_core.training.pneumothorax_sources import (
    STRUCTURES,
    Counts,
    MaskFiles,
    Sources,
    count_samples,
)
from cxr_core.training.provenance import (
    base_card,
    carried_description,
    make_provenance,
    next_version,
    runtime_settings,
)

log = logging.getLogger(__name__)

MODEL_NAME = "pneumothorax"
PTX_NETWORK: dict[str, Any] = {
    "spatial_dims": 2, "in_channels": 1, "out_channels": 1,
    "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 1,
}
# Specks below 0.1 % of the image are noise at 256 px; the minimum-area rule comes after.
MIN_COMPONENT_FRACTION = 0.001
DEFAULT_RUNTIME = RuntimeSettings(
    postprocess=PostProcess(method="min_component", min_component_fraction=MIN_COMPONENT_FRACTION),
    lesion=DEFAULT_RULE)
SELECTION_EMPTY_FRACTION = DEFAULT_RULE.min_area_fraction
"""A val negative counts as left empty below this predicted area (model selection only:
the fixed default, so selection does not move with a card's edited lesion rule)."""


@dataclass(kw_only=True)
class PtxTrainOptions:
    """The pneumothorax training choices beyond :class:`~cxr_core.training.loop.TrainConfig`.

    The runtime fields (``min_area_mm2`` ... ``min_component_fraction``) default to None:
    "not told", i.e. keep the base card's value (or the engine default for a new model).
    """

    size: int = 256
    init_from: str | Path | None = None
    """A model (e.g. ``lung_seg``) whose matching layers start the network."""
    positive_zoom: float = 0.5
    detail: float = 1.0
    """Blur/sharpen jitter: SIIM PNGs are sharper than NIH PNGs (source cue)."""
    positive_share: float = 0.5
    """Share of drawn training samples that are positive (the weighted sampler)."""
    image_weight: float = 0.0
    """Weight of the image-level (multiple-instance) loss term
    (:class:`~cxr_core.training.losses.LesionMilLoss`); it is what lets image-level
    labels (``Sources.nih_labelled``) train the mask network (0 = off, the shipped
    recipe)."""
    swap: float = 0.5
    """Probability that a drawn image has a lesion region moved in or covered
    (:class:`LesionSwap`): with ``positive_share`` 0.5 and ``swap`` 0.5, an image's source
    says nothing about its label (0 = off)."""
    min_area_mm2: float | None = None
    min_area_fraction: float | None = None
    thorax_margin_fraction: float | None = None
    thorax_min_inside: float | None = None
    min_component_fraction: float | None = None
    version: str | None = None
    lung_model: str | Path | None = "lung_seg"
    """Lung model for the thorax gate and the healthy-lung source check in the final
    evaluation (None: skip both)."""

    def explicit_runtime(self, base: ModelCard | None) -> RuntimeSettings:
        """The runtime parts these options set explicitly, each over the base card's
        (or the default) value of the fields not given; unset parts stay None."""
        lesion_changes = {name: value for name in (
            "min_area_mm2", "min_area_fraction", "thorax_margin_fraction", "thorax_min_inside")
            if (value := getattr(self, name)) is not None}
        carried = runtime_settings(fitted=RuntimeSettings(), base=base, default=DEFAULT_RUNTIME)
        lesion = (dataclasses.replace(carried.lesion or DEFAULT_RULE, **lesion_changes)
                  if lesion_changes else None)
        postprocess = (PostProcess(method="min_component",
                                   min_component_fraction=self.min_component_fraction)
                       if self.min_component_fraction is not None else None)
        return RuntimeSettings(lesion=lesion, postprocess=postprocess)


def ptx_config(**changes: Any) -> TrainConfig:
    """The segmentation defaults with a 14-minute cap (``changes`` override them)."""
    return TrainConfig(max_minutes=14.0).but(**changes)


def train_pneumothorax(*, sources: Sources, out_dir: Path, command: str,
                       config: TrainConfig, options: PtxTrainOptions) -> ModelCard:
    """Train, pick the best epoch on val, evaluate on test, save weights, card, history
    and figures into ``out_dir``.

    Raises
    ------
    ValueError
        When the sources hold no train or no val images.
    """
    samples = sources.samples(MaskFiles())
    by_split = {s: [x for x in samples if x.split == s] for s in ("train", "val", "test")}
    counts = count_samples(samples)
    log.info("samples: %s", counts)
    if not by_split["train"] or not by_split["val"]:
        raise ValueError(f"sources: need train and val images, got {counts}")
    grid = (options.size, options.size)
    train_set = load_tensors(by_split["train"], STRUCTURES, grid)
    val_set = load_tensors(by_split["val"], STRUCTURES, grid)
    config = config.but(
        sample_weights=_balanced_weights(_positive(train_set), options.positive_share),
        loss=LesionMilLoss(pixel_loss=MaskedBceDiceLoss(focal_gamma=2.0, empty_dice=True),
                           image_weight=options.image_weight,
                           top_fraction=SELECTION_EMPTY_FRACTION),
        augment=Chain(_lesion_swap(train_set, options.swap),
                      RandomAffineIntensity(positive_zoom=options.positive_zoom,
                                            detail=options.detail)),
        validation=DiceValidation(select=balanced_score))
    base = base_card(MODEL_NAME, options.init_from)
    network, parent = _initial_network(options.init_from)
    started = time.monotonic()
    network, history = train(network, train_set, val_set, config)
    card = _card(options, command, config, sources, counts, history, parent, base,
                 minutes=(time.monotonic() - started) / 60)
    save_model(network, card, out_dir, history=history)
    plot_training(history, out_dir)
    detector = PneumothoraxDetector(Segmenter(network, card))
    lung = Segmenter.load(options.lung_model) if options.lung_model else None
    card.evaluation = evaluate_pneumothorax(detector, samples, out_dir, split="test", lung=lung,
                                            data_root=sources.data_root)
    card.evaluation["evaluated_by"] = "cxr train pneumothorax (test split, after training)"
    card.evaluation["limits"] = limits_statement(counts, card.evaluation)
    save_model(network, card, out_dir, history=history)
    return card


def plot_training(history: History, out_dir: Path) -> None:
    """Loss and val Dice (empty-empty = 1), and loss and the selection score."""
    plot_curves(history, STRUCTURES, out_dir / "training_curves.png")
    scored = [h | {"val_score_0": h["val_score"]} for h in history]
    plot_curves(scored, ["(Dice on positives + negatives left empty) / 2"],
                out_dir / "training_selection_score.png", metric="score")


def _positive(data: SegmentationTensors) -> torch.Tensor:
    """``(N,)``: a lesion pixel in the mask, or an image-level "present" label."""
    return (data.targets.flatten(1).amax(dim=1) > 0.5) | (data.known[:, 0] == KNOWN_PRESENT)


def _lesion_swap(train_set: SegmentationTensors, probability: float) -> LesionSwap:
    """Lesions of the training positives move into training negatives and back (donor
    lesions need masks; an image-level positive is never a negative donor)."""
    masked = train_set.targets.flatten(1).amax(dim=1) > 0.5
    return LesionSwap(positives=train_set.images[masked],
                      positive_targets=train_set.targets[masked],
                      negatives=train_set.images[~_positive(train_set)],
                      to_positive=probability, to_negative=probability)


def _balanced_weights(positive: torch.Tensor, positive_share: float) -> torch.Tensor:
    """Drawing weights giving the ``positive`` samples ``positive_share`` of the draws."""
    if not 0 < positive_share < 1:
        raise ValueError(f"positive_share: must be in (0, 1), got {positive_share}")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return torch.ones(len(positive))
    return torch.where(positive, positive_share / n_pos, (1 - positive_share) / n_neg)


def balanced_score(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> float:
    """Model selection: mean of (Dice on positives) and (share of negatives left empty).

    Mean Dice with empty-empty = 1 would crown a model that never predicts anything when
    most val images are negative.
    """
    del known  # every pneumothorax sample here has a known (possibly empty) mask
    predicted, truth = logits[:, 0] > 0, targets[:, 0] > 0.5
    positive = truth.flatten(1).any(dim=1)
    overlap = (predicted & truth).flatten(1).sum(dim=1).float()
    total = (predicted.flatten(1).sum(dim=1) + truth.flatten(1).sum(dim=1)).float()
    dice = (2 * overlap / total.clamp(min=1))[positive]
    area = predicted.flatten(1).float().mean(dim=1)[~positive]
    parts = []
    if dice.numel():
        parts.append(float(dice.mean()))
    if area.numel():
        parts.append(float((area < SELECTION_EMPTY_FRACTION).float().mean()))
    return sum(parts) / len(parts)


def _initial_network(init_from: str | Path | None) -> tuple[torch.nn.Module, str | None]:
    """A fresh UNet, or one whose layers of matching shape come from ``init_from``
    (e.g. the lung model: it already knows where the chest wall and apices are)."""
    network = build_network("UNet", PTX_NETWORK)
    if init_from is None:
        return network, None
    source, card = load_model(init_from)
    own = network.state_dict()
    matching = {k: v for k, v in source.state_dict().items()
                if k in own and own[k].shape == v.shape}
    network.load_state_dict(matching, strict=False)
    log.info("initialised %d of %d tensors from %s", len(matching), len(own), card.identifier)
    return network, card.identifier


def _card(options: PtxTrainOptions, command: str, config: TrainConfig, sources: Sources,
          counts: Counts, history: Sequence[dict[str, float]], parent: str | None,
          base: ModelCard | None, minutes: float) -> ModelCard:
    selection = (
        "SIIM-ACR positives with masks; NIH 'No Finding' images"
        + (" and NIH Pneumonia images without a Pneumothorax label"
           if sources.nih_pneumonia_negatives else "")
        + " as negatives (known-empty masks)"
        + ("; NIH train-split images labelled Pneumothorax as image-level positives (no "
           "mask) and the other nih_cxr14_multilabel train images as negatives"
           if sources.nih_labelled else "")
        + ("; the 3 SIIM negatives are held out (split 'source_check') to test whether the "
           "model learned the image source"
           if sources.hold_out_siim_negatives and sources.data_root else ""))
    details = {
        "loss": "BCE with focal weighting (gamma 2) + soft Dice, Dice also on empty targets"
        + (f" + {options.image_weight} x image-level BCE of the mean logit of the top "
           f"{SELECTION_EMPTY_FRACTION:.1%} pixels (multiple-instance: image-level labels "
           "train the mask network)" if options.image_weight else ""),
        "nih_labelled": sources.nih_labelled,
        "sampler": f"weighted: {options.positive_share:.0%} of draws positive",
        "augmentation": "rotation/scale/shift, gamma/contrast/noise, no flips; positives "
        f"zoomed about the lesion with probability {options.positive_zoom}; blur/sharpen "
        f"jitter +-{options.detail} (SIIM PNGs are sharper than NIH PNGs); lesion swap with "
        f"probability {options.swap}: a negative gets a training positive's lesion region "
        "(and its mask), a positive gets its lesion region covered by a negative's (and an "
        "empty mask), so the image source does not predict the label",
        "model_selection": "best val mean of (Dice on positives, share of negatives "
        "predicted empty); early stopping",
        "nih_negatives_per_split": sources.nih_negatives,
        "nih_pneumonia_negatives_per_split": sources.nih_pneumonia_negatives,
        "batch_size": config.batch_size, "learning_rate": config.learning_rate,
    }
    return ModelCard(
        name=MODEL_NAME, version=next_version(base, options.version), task="segmentation",
        network=NetworkSpec(architecture="UNet", kwargs=PTX_NETWORK,
                            input_size=(options.size, options.size)),
        labels=list(STRUCTURES),
        provenance=make_provenance(
            command=command, parent_model=parent, datasets=sources.describe(),
            counts=dict(counts), selection=selection, seed=config.seed, minutes=minutes,
            epochs_run=len(history), details=details),
        description=carried_description(base, MODEL_NAME, "segmentation"),
        runtime=runtime_settings(fitted=options.explicit_runtime(base), base=base,
                                 default=DEFAULT_RUNTIME),
    )

