"""How far to trust a mask: the model's agreement with itself, and the review order.

A segmentation network's sigmoid outputs are sharp (near 0 or 1) where it is sure and
soft where it hesitates. The *mask agreement* of a structure is the Dice between its
confident core (probability above :data:`CORE`) and its widest extent (above
:data:`EXTENT`), at the model's own grid: 1 when every boundary is crisp, lower the
more pixels the model leaves undecided. It costs no extra network pass (a few array
operations on probabilities the stage already has).

Measured on the shared lung test split (83 images, ``benchmarks/mask_quality.py``),
against the true Dice of the shipped lung model's masks: Spearman 0.64 (right lung) and
0.76 (left lung); the lowest-scored 20 % of images hold most masks with Dice < 0.92.
Test-time augmentation disagreement (four shifts/scales and two gammas) ranked no better
(0.64 / 0.71) for six extra network passes, so it is not used. For the heart (15 test
images with a heart mask) the ranking is weak (0.28): the estimate is given, the review
order does not rest on it.

The pneumothorax model's reported masks get the same estimate. On the 12 SIIM-ACR
positives it was not trained on (val + test) it reported 9 masks; their agreement ranks
their true Dice with Spearman 0.85, 95 % CI 0.22-1.00
(``benchmarks/pneumothorax_mask_quality.py``): better than chance, but 9 masks settle
little. A missed pneumothorax has no mask, hence no estimate. The review order does not
rest on it either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from cxr_core.analysis import Measurement, Segment
from cxr_core.terminology import MASK_AGREEMENT, MASK_AGREEMENT_METHOD, SEGMENT_TYPES

if TYPE_CHECKING:  # only for the annotation: reading review.csv needs no torch
    import torch

CORE = 0.9
"""Probability above which a pixel is in the confident core."""
EXTENT = 0.1
"""Probability above which a pixel is in the widest extent."""
REVIEW_SEGMENTS = ("right_lung", "left_lung")
"""The segments the review order rests on (where the estimate was shown to rank errors)."""
METHOD = (f"Dice between the model's confident core (p > {CORE:g}) and its widest "
          f"extent (p > {EXTENT:g}) at its input grid; 1 = crisp boundaries. ")
DERIVATION = (METHOD + "Ranks true Dice with Spearman 0.64 (right lung), 0.76 (left lung) on "
              "the shared test split; an estimate, not a measured Dice")
DERIVATIONS = {"pneumothorax": METHOD + (
    "Ranks true Dice with Spearman 0.85 (95% CI 0.22-1.00) on only 9 masks of held-out "
    "SIIM-ACR positives; an estimate, not a measured Dice")}
"""Per segment, when its evidence differs from the lungs' (:data:`DERIVATION`)."""


def mask_agreement(probabilities: torch.Tensor) -> list[float]:
    """Per channel of ``(C, rows, columns)`` probabilities, the Dice of core and extent.

    A channel with no pixel above :data:`EXTENT` (nothing drawn) agrees perfectly (1).
    """
    values = probabilities.numpy().reshape(probabilities.shape[0], -1)
    core = np.count_nonzero(values > CORE, axis=1)
    extent = np.count_nonzero(values > EXTENT, axis=1)
    # the core lies inside the extent, so their overlap is the core
    return [round(2 * int(c) / (int(c) + int(e)), 4) if c + e else 1.0
            for c, e in zip(core, extent, strict=True)]


def quality_measurements(segments: Iterable[Segment]) -> list[Measurement]:
    """One ``<segment>_mask_agreement`` measurement per segment that carries one, at the
    segment's site (so the SR puts it in that structure's group)."""
    results = []
    for segment in segments:
        if segment.quality is None:
            continue
        kind = SEGMENT_TYPES[segment.name]
        results.append(Measurement(
            f"{segment.name}_mask_agreement", segment.quality, "1",
            DERIVATIONS.get(segment.name, DERIVATION),
            concept=MASK_AGREEMENT, site=kind.property_type, laterality=kind.modifier,
            method=MASK_AGREEMENT_METHOD))
    return results


def review_score(segments: Mapping[str, Segment],
                 names: Sequence[str] = REVIEW_SEGMENTS) -> float | None:
    """The lowest mask agreement among ``names`` (the worst lung): lower = review first;
    None when none of them has an estimate."""
    values = [segments[name].quality for name in names
              if name in segments and segments[name].quality is not None]
    return min(v for v in values if v is not None) if values else None


def worst_first(scores: Sequence[float | None]) -> list[int]:
    """Indices ordering ``scores`` lowest first; missing scores last, in input order."""
    return sorted(range(len(scores)),
                  key=lambda i: (scores[i] is None, scores[i] if scores[i] is not None else 0.0,
                                 i))

