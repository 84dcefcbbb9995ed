"""One training loop for every segmentation model (lungs, pneumothorax)."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from cxr_core.training.augment import Augment, RandomAffineIntensity
from cxr_core.training.losses import MaskedBceDiceLoss

log = logging.getLogger(__name__)


@dataclass
class SegTrainConfig:
    epochs: int = 60
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    patience: int = 15
    max_minutes: float = 40.0
    seed: int = 0
    sample_weights: torch.Tensor | None = None
    """Per-sample drawing weights (a weighted sampler for rare positives); None = shuffle."""
    loss: MaskedBceDiceLoss = field(default_factory=MaskedBceDiceLoss)
    augment: Augment = field(default_factory=RandomAffineIntensity)
    score: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float] | None = None
    """Model selection on val ``(logits, targets, known) -> higher is better``; None =
    mean Dice per structure (a lesion model needs one that empty outputs cannot win)."""


@dataclass
class TensorSet:
    images: torch.Tensor
    targets: torch.Tensor
    known: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def dice_per_structure(logits: torch.Tensor, targets: torch.Tensor,
                       known: torch.Tensor) -> list[float]:
    """Mean hard Dice per channel over samples whose label is known (empty-empty = 1)."""
    predicted, truth = logits > 0, targets > 0.5
    overlap = (predicted & truth).sum(dim=(2, 3)).float()
    total = predicted.sum(dim=(2, 3)).float() + truth.sum(dim=(2, 3)).float()
    dice = torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total))
    return [float((dice[:, c] * known[:, c]).sum() / known[:, c].sum().clamp(min=1))
            for c in range(dice.shape[1])]


def predict_logits(network: torch.nn.Module, images: torch.Tensor,
                   batch_size: int = 16) -> torch.Tensor:
    network.eval()
    with torch.inference_mode():
        return torch.cat([network(images[i:i + batch_size])
                          for i in range(0, len(images), batch_size)])


def train_segmentation(
    network: torch.nn.Module,
    train: TensorSet,
    val: TensorSet,
    config: SegTrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train with AdamW + cosine schedule; return the best-on-val network and the history.

    Stops early after ``patience`` epochs without a better mean val Dice, or when
    ``max_minutes`` have passed (the best checkpoint so far is kept either way).
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    total_steps = config.epochs * math.ceil(len(train) / config.batch_size)
    # warm up over 10 % of the steps, but at least two (OneCycleLR divides by the warm-up
    # length, so tiny fine-tunes on a handful of corrected images would crash)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=max(total_steps, 4),
        pct_start=max(0.1, 2 / max(total_steps, 4)))
    best_score, best_state, since_best = -1.0, copy.deepcopy(network.state_dict()), 0
    history: list[dict[str, float]] = []
    started = time.monotonic()
    progress = tqdm(range(config.epochs), desc="training", unit="epoch", leave=True)
    for epoch in progress:
        train_loss = _train_epoch(network, train, config, optimizer, scheduler, generator)
        val_logits = predict_logits(network, val.images)
        val_loss = float(config.loss(val_logits, val.targets, val.known))
        val_dice = dice_per_structure(val_logits, val.targets, val.known)
        score = (config.score(val_logits, val.targets, val.known) if config.score
                 else sum(val_dice) / len(val_dice))
        record = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                  "val_mean_dice": sum(val_dice) / len(val_dice), "val_score": score,
                  "minutes": (time.monotonic() - started) / 60}
        record |= {f"val_dice_{i}": d for i, d in enumerate(val_dice)}
        history.append(record)
        progress.set_postfix(loss=f"{train_loss:.3f}", val_dice=f"{score:.3f}")
        if on_epoch:
            on_epoch(record)
        if score > best_score:
            best_score, best_state, since_best = score, copy.deepcopy(network.state_dict()), 0
        else:
            since_best += 1
        if since_best >= config.patience:
            log.info("early stop after epoch %d (best val Dice %.4f)", epoch + 1, best_score)
            break
        if record["minutes"] >= config.max_minutes:
            log.info("time budget reached after epoch %d", epoch + 1)
            break
    network.load_state_dict(best_state)
    return network.eval(), history


def _train_epoch(network, train, config, optimizer, scheduler, generator) -> float:
    network.train()
    steps = math.ceil(len(train) / config.batch_size)
    if config.sample_weights is None:
        order = torch.randperm(len(train), generator=generator)
    else:
        order = torch.multinomial(config.sample_weights, steps * config.batch_size,
                                  replacement=True, generator=generator)
    total = 0.0
    for step in range(steps):
        index = order[step * config.batch_size:(step + 1) * config.batch_size]
        if len(index) == 0:
            continue
        images, targets = config.augment(train.images[index], train.targets[index], generator)
        loss = config.loss(network(images), targets, train.known[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler.last_epoch < scheduler.total_steps - 1:
            scheduler.step()
        total += float(loss.detach())
    return total / steps
