"""The one training loop, for every model (lungs, pneumothorax, findings).

AdamW with a one-cycle schedule, an epoch of shuffled (or weighted) batches, validation
after every epoch, the best-on-val weights kept, early stopping after ``patience`` epochs
without a better val score, and a time cap. What differs between tasks is data (a
:class:`TrainData`: segmentation masks, or finding labels with lung masks per input mode)
and the :class:`TrainConfig` (loss, augmentation, validation score, warm-up, the smallest
batch worth a step).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tqdm import tqdm

from cxr_core.training.augment import Augment, RandomAffineIntensity
from cxr_core.training.losses import MaskedBceDiceLoss
from cxr_core.training.metrics import dice_per_structure, mean_auc

log = logging.getLogger(__name__)

History = list[dict[str, float]]
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(logits, targets, known) -> scalar loss``."""
Score = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float]
"""``(val logits, targets, known) -> higher is better``."""


class Validation(Protocol):
    """Scores the val predictions after an epoch: the selection score (higher is
    better) and the figures recorded in the history (``val_<name>``)."""

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor,
                 known: torch.Tensor) -> tuple[float, dict[str, float]]: ...


class TrainData(Protocol):
    """What the loop needs of a data set: its size, batches for training and the whole
    set as network inputs for validation."""

    @property
    def targets(self) -> torch.Tensor:
        """Targets ``(N, C, ...)`` in 0..1 (masks or labels)."""
        ...

    @property
    def known(self) -> torch.Tensor:
        """``(N, C)``: 1 where the sample has a label for channel ``C``."""
        ...

    def __len__(self) -> int: ...

    def inputs(self) -> torch.Tensor:
        """Every sample as the network sees it, not augmented (validation)."""
        ...

    def batch(self, index: torch.Tensor, augment: Augment, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(inputs, targets, known)`` of the samples ``index``, augmented."""
        ...


@dataclass(frozen=True)
class DiceValidation:
    """Segmentation: mean hard Dice per structure (``val_dice_<i>``, ``val_mean_dice``).

    Parameters
    ----------
    select:
        The selection score; None = the mean Dice (a lesion model needs one that empty
        outputs cannot win).
    """

    select: Score | None = None

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor,
                 known: torch.Tensor) -> tuple[float, dict[str, float]]:
        dice = dice_per_structure(logits, targets, known)
        mean = sum(dice) / len(dice)
        score = self.select(logits, targets, known) if self.select else mean
        return score, {"val_mean_dice": mean} | {f"val_dice_{i}": d for i, d in enumerate(dice)}


@dataclass(frozen=True)
class AucValidation:
    """Classification: mean val AUC over the labels with at least ``min_positives``
    val positives (recorded as ``val_auc_0``, the one curve the training plot draws)."""

    min_positives: int = 1

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor,
                 known: torch.Tensor) -> tuple[float, dict[str, float]]:
        score = mean_auc(logits, targets, known, self.min_positives)
        return score, {"val_auc_0": score}


@dataclass(kw_only=True)
class TrainConfig:
    """How to train; the defaults are the segmentation models'.

    ``warmup_fraction`` of the steps (but at least ``min_warmup_steps``) ramp the learning
    rate up: OneCycleLR divides by the warm-up length, so a tiny fine-tune on a handful
    of corrected images would otherwise crash. Batches smaller than ``min_batch_size`` are
    skipped (batch norm needs two samples).
    """

    epochs: int = 60
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    patience: int = 15
    max_minutes: float = 40.0
    seed: int = 0
    sample_weights: torch.Tensor | None = None
    """Per-sample drawing weights (a weighted sampler for rare positives); None = shuffle."""
    loss: Loss = field(default_factory=MaskedBceDiceLoss)
    augment: Augment = field(default_factory=RandomAffineIntensity)
    validation: Validation = field(default_factory=DiceValidation)
    warmup_fraction: float = 0.1
    min_warmup_steps: int = 2
    min_batch_size: int = 1
    predict_batch_size: int = 16
    label: str = "training"
    """Progress bar and log label."""

    def but(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


def predict_logits(network: torch.nn.Module, inputs: torch.Tensor,
                   batch_size: int = 16) -> torch.Tensor:
    """The network's outputs for ``inputs`` in eval mode, ``batch_size`` at a time."""
    network.eval()
    with torch.inference_mode():
        return torch.cat([network(inputs[i:i + batch_size])
                          for i in range(0, len(inputs), batch_size)])


def train(network: torch.nn.Module, train_data: TrainData, val_data: TrainData,
          config: TrainConfig, on_epoch: Callable[[dict[str, float]], None] | None = None
          ) -> tuple[torch.nn.Module, History]:
    """Train; return the network with its best-on-val weights (in eval mode) and the
    per-epoch history.

    Stops after ``patience`` epochs without a better val score or once ``max_minutes``
    have passed; the best weights so far are kept either way.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    total_steps = max(config.epochs * math.ceil(len(train_data) / config.batch_size), 4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=total_steps,
        pct_start=max(config.warmup_fraction, config.min_warmup_steps / total_steps))
    val_inputs = val_data.inputs()
    best_score, best_state, since_best = -1.0, copy.deepcopy(network.state_dict()), 0
    history: History = []
    started = time.monotonic()
    progress = tqdm(range(config.epochs), desc=config.label, unit="epoch", leave=True)
    for epoch in progress:
        train_loss = _train_epoch(network, train_data, config, optimizer, scheduler, generator)
        logits = predict_logits(network, val_inputs, config.predict_batch_size)
        val_loss = float(config.loss(logits, val_data.targets, val_data.known))
        score, figures = config.validation(logits, val_data.targets, val_data.known)
        record = ({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss}
                  | figures | {"val_score": score,
                               "minutes": (time.monotonic() - started) / 60})
        history.append(record)
        progress.set_postfix(loss=f"{train_loss:.3f}", val_score=f"{score:.3f}")
        log.info("%s epoch %d loss %.4f val score %.4f", config.label, epoch + 1, train_loss,
                 score)
        if on_epoch:
            on_epoch(record)
        if score > best_score:
            best_score, best_state, since_best = score, copy.deepcopy(network.state_dict()), 0
        else:
            since_best += 1
        if since_best >= config.patience:
            log.info("early stop after epoch %d (best val score %.4f)", epoch + 1, best_score)
            break
        if record["minutes"] >= config.max_minutes:
            log.info("time budget reached after epoch %d", epoch + 1)
            break
    network.load_state_dict(best_state)
    return network.eval(), history


def _train_epoch(network: torch.nn.Module, data: TrainData, config: TrainConfig,
                 optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.OneCycleLR,
                 generator: torch.Generator) -> float:
    """One pass of ``ceil(len / batch_size)`` batches; the mean loss of those trained on."""
    network.train()
    steps = math.ceil(len(data) / config.batch_size)
    if config.sample_weights is None:
        order = torch.randperm(len(data), generator=generator)
    else:
        # drawn with replacement: as many samples as an epoch of full batches holds
        order = torch.multinomial(config.sample_weights, steps * config.batch_size,
                                  replacement=True, generator=generator)
    total, batches = 0.0, 0
    for start in range(0, len(order), config.batch_size):
        index = order[start:start + config.batch_size]
        if len(index) < max(config.min_batch_size, 1):
            continue
        inputs, targets, known = data.batch(index, config.augment, generator)
        loss = config.loss(network(inputs), targets, known)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves backward untyped
        optimizer.step()
        # OneCycleLR raises past its last step; a final partial epoch may reach it
        if scheduler.last_epoch < scheduler.total_steps - 1:
            scheduler.step()
        total, batches = total + float(loss.detach()), batches + 1
    return total / max(batches, 1)
