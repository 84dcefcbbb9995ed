"""Losses that skip what a sample has no label for (a structure, a finding)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class MaskedBceDiceLoss:
    """Per-structure BCE + soft Dice (+ optional focal weighting), averaged over the
    (sample, structure) pairs whose label is known.

    Parameters
    ----------
    dice_weight:
        Weight of the soft-Dice term against BCE.
    focal_gamma:
        0 for plain BCE; >0 down-weights easy pixels (small lesions such as pneumothorax).
    empty_dice:
        Whether a known-empty target contributes a Dice term (penalising false positives);
        off for lungs (never empty), on for lesions.
    """

    def __init__(self, *, dice_weight: float = 1.0, focal_gamma: float = 0.0,
                 empty_dice: bool = False) -> None:
        self.dice_weight = dice_weight
        self.focal_gamma = focal_gamma
        self.empty_dice = empty_dice

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor,
                 known: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if self.focal_gamma:
            probabilities = torch.sigmoid(logits)
            p_true = probabilities * targets + (1 - probabilities) * (1 - targets)
            bce = bce * (1 - p_true) ** self.focal_gamma
        bce = bce.mean(dim=(2, 3))
        probabilities = torch.sigmoid(logits)
        overlap = (probabilities * targets).sum(dim=(2, 3))
        total = probabilities.sum(dim=(2, 3)) + targets.sum(dim=(2, 3))
        dice = 1 - (2 * overlap + 1) / (total + 1)
        dice_known = known if self.empty_dice else known * (targets.sum(dim=(2, 3)) > 0)
        count = known.sum().clamp(min=1)
        loss = (bce * known).sum() / count
        return loss + self.dice_weight * (dice * dice_known).sum() / dice_known.sum().clamp(min=1)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the ``(sample, label)`` pairs whose label is known (the
    classifier's loss: an image without a label for a finding teaches nothing about it)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (loss * known).sum() / known.sum().clamp(min=1)
