"""Does the mask quality estimate rank real errors? Figures for ``cxr evaluate lung``.

Two questions, per structure and per image: how well the estimate orders the masks by
their true Dice (Spearman, with a bootstrap 95 % interval), and how many of the poor
masks (Dice below :data:`POOR_DICE`) a reader reviewing the lowest-scored
:data:`REVIEW_SHARE` of images would see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from cxr_core.mask_quality import REVIEW_SEGMENTS
from cxr_core.training.metrics import bootstrap_interval

POOR_DICE = 0.92
REVIEW_SHARE = 0.2
POOR_PNEUMOTHORAX_DICE = 0.5
"""A pneumothorax mask a reader must redraw: SIIM readers' own masks of one image agree
far less than lung outlines do, so the lungs' 0.92 would call almost every mask poor."""


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for a constant input."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def lowest_share(scores: np.ndarray, share: float = REVIEW_SHARE) -> np.ndarray:
    """Boolean: the ``share`` of entries with the lowest scores (at least one)."""
    count = max(1, int(round(share * scores.size)))
    picked = np.zeros(scores.size, dtype=bool)
    picked[np.argsort(scores, kind="stable")[:count]] = True
    return picked


def ranking_figures(scores: Sequence[float], dice: Sequence[float],
                    bootstrap: int = 2000, poor_dice: float = POOR_DICE) -> dict[str, Any]:
    """Spearman of ``scores`` with ``dice`` (bootstrap 95 % CI) and the share of masks
    with Dice below ``poor_dice`` among the lowest-scored :data:`REVIEW_SHARE`."""
    x, y = np.asarray(scores, dtype=float), np.asarray(dice, dtype=float)
    poor = y < poor_dice
    found = int((poor & lowest_share(x)).sum())
    return {
        "n": int(x.size), "poor_dice": poor_dice, "spearman": round(spearman(x, y), 4),
        "spearman_ci95": bootstrap_interval(lambda i: spearman(x[i], y[i]), x.size,
                                            samples=bootstrap),
        "n_poor": int(poor.sum()), "poor_in_lowest_20pct": found,
        "share_poor_in_lowest_20pct": round(found / poor.sum(), 4) if poor.any() else None,
    }


def quality_figures(rows: Sequence[Mapping[str, Mapping[str, float]]],
                    bootstrap: int = 2000) -> dict[str, Any]:
    """Figures per structure and per image from one row per image:
    ``{structure: {"quality": q, "dice": d}}`` (structures with a true mask only).

    Per image, the score is the worst lung's estimate (the review order) and the poor
    masks counted are the lungs' (:data:`~cxr_core.mask_quality.REVIEW_SEGMENTS`).
    """
    figures: dict[str, Any] = {"poor_dice": POOR_DICE, "review_share": REVIEW_SHARE}
    names = sorted({name for row in rows for name in row})
    for name in names:
        pairs = [(row[name]["quality"], row[name]["dice"]) for row in rows if name in row]
        figures[name] = ranking_figures([q for q, _ in pairs], [d for _, d in pairs], bootstrap)
    figures["images"] = _image_figures(rows)
    return figures


def _image_figures(rows: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, Any]:
    """Of the poor lung masks, how many lie in the lowest-scored fifth of images."""
    usable = [row for row in rows if all(name in row for name in REVIEW_SEGMENTS)]
    if not usable:
        return {"n": 0}
    scores = np.array([min(row[n]["quality"] for n in REVIEW_SEGMENTS) for row in usable])
    poor = np.array([sum(row[n]["dice"] < POOR_DICE for n in REVIEW_SEGMENTS)
                     for row in usable])
    worst = np.array([min(row[n]["dice"] for n in REVIEW_SEGMENTS) for row in usable])
    picked = lowest_share(scores)
    return {"n": len(usable), "spearman_with_worst_lung_dice": round(spearman(scores, worst), 4),
            "spearman_ci95": bootstrap_interval(
                lambda i: spearman(scores[i], worst[i]), len(usable)),
            "poor_lung_masks": int(poor.sum()),
            "poor_lung_masks_in_lowest_20pct": int(poor[picked].sum()),
            "share": round(float(poor[picked].sum() / poor.sum()), 4) if poor.any() else None}


def pneumothorax_quality_figures(pairs: Sequence[tuple[float | None, float]],
                                 bootstrap: int = 2000) -> dict[str, Any]:
    """How the pneumothorax mask agreement ranks the true Dice of the masks reported on
    positive images, from ``(agreement, dice)`` per positive image (agreement None when
    no mask was reported: a missed pneumothorax has no mask and so no estimate)."""
    reported = [(q, d) for q, d in pairs if q is not None]
    figures: dict[str, Any] = {"n_positive": len(pairs),
                               "n_missed_no_estimate": len(pairs) - len(reported)}
    if len(reported) < 3:
        return figures | {"reading": "fewer than 3 reported masks: nothing to rank"}
    return figures | ranking_figures([q for q, _ in reported], [d for _, d in reported],
                                     bootstrap, poor_dice=POOR_PNEUMOTHORAX_DICE)
