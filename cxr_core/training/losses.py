"""Losses that skip what a sample has no label for (a structure, a finding)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxr_core.training.data import KNOWN_MASK, KNOWN_PRESENT


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
        known = (known == KNOWN_MASK).to(logits.dtype)  # image-level labels: no pixel loss
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


class LesionMilLoss:
    """:class:`MaskedBceDiceLoss` plus an image-level term (multiple-instance learning) that
    lets images with only a report label ("pneumothorax present", extent unknown) teach the
    same mask network.

    The image score is the mean logit of the ``top_fraction`` highest-scoring pixels; its
    BCE is taken against "present" for :data:`~cxr_core.training.data.KNOWN_PRESENT`
    samples and for known masks with any lesion pixel, and against "absent" for
    known-empty masks. With ``top_fraction`` at the engine's minimum lesion area, a
    positive image score means about that many pixels above 0.5: what the engine's
    decision needs.

    Parameters
    ----------
    pixel_loss:
        The loss of the samples whose masks are known.
    image_weight:
        Weight of the image-level term.
    top_fraction:
        Share of the pixels pooled into the image score.
    """

    def __init__(self, *, pixel_loss: MaskedBceDiceLoss, image_weight: float = 0.5,
                 top_fraction: float = 0.004) -> None:
        if not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction: must be in (0, 1], got {top_fraction}")
        self.pixel_loss = pixel_loss
        self.image_weight = image_weight
        self.top_fraction = top_fraction

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor,
                 known: torch.Tensor) -> torch.Tensor:
        loss = self.pixel_loss(logits, targets, known)
        if not self.image_weight:
            return loss
        flat = logits.flatten(2)
        count = max(1, round(flat.shape[2] * self.top_fraction))
        image_logit = flat.topk(count, dim=2).values.mean(dim=2)
        present = ((known == KNOWN_PRESENT)
                   | ((known == KNOWN_MASK) & (targets.flatten(2).amax(dim=2) > 0.5)))
        labelled = (known == KNOWN_PRESENT) | (known == KNOWN_MASK)
        image = masked_bce(image_logit, present.to(logits.dtype), labelled.to(logits.dtype))
        return loss + self.image_weight * image


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the ``(sample, label)`` pairs whose label is known (the
    classifier's loss: an image without a label for a finding teaches nothing about it)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (loss * known).sum() / known.sum().clamp(min=1)
