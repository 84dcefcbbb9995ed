"""Every figure training and evaluation report: AUC, ROC, operating points, calibration,
bootstrap intervals and overlap (Dice/IoU).

One Mann-Whitney AUC serves both ways of asking (labels + scores, or two groups of
scores); the bootstrap helpers keep the exact resampling each card figure was made with,
so re-running an evaluation reproduces the card to the last digit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from scipy.stats import rankdata

from cxr_core.training.data import KNOWN_MASK

BOOTSTRAP_SAMPLES = 2000
ECE_BINS = 10

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


# ---------------------------------------------------------------------------- ranking


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve: the Mann-Whitney statistic, ties counting one half.

    Parameters
    ----------
    labels:
        Truth per sample (anything ``bool`` accepts).
    scores:
        Higher means more likely positive.

    Returns
    -------
    float
        NaN when ``labels`` lacks either class.
    """
    truth = np.asarray(labels, dtype=bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[truth].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def group_auc(positives: ArrayLike, negatives: ArrayLike) -> float:
    """:func:`roc_auc` of two groups of scores: how often a ``positives`` score beats a
    ``negatives`` one (ties one half); NaN when a group is empty."""
    first, second = np.asarray(positives, dtype=float), np.asarray(negatives, dtype=float)
    labels = np.concatenate([np.ones(first.size, dtype=bool), np.zeros(second.size, dtype=bool)])
    return roc_auc(labels, np.concatenate([first, second]))


def mean_auc(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor,
             min_positives: int = 1) -> float:
    """Mean over labels (columns) of the AUC on the samples whose label is known; labels
    without both classes, or with fewer than ``min_positives`` positives (too few to
    rank anything), are left out of the mean."""
    scores = []
    for c in range(targets.shape[1]):
        truth = targets[:, c][known[:, c] > 0].numpy()
        if truth.sum() >= min_positives:
            scores.append(roc_auc(truth, logits[:, c][known[:, c] > 0].numpy()))
    return float(np.nanmean(scores)) if scores else float("nan")


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """``(false positive rate, true positive rate)`` over every threshold, from (0, 0)."""
    truth = np.asarray(labels, dtype=bool)
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = truth[order]
    tpr = np.concatenate([[0.0], np.cumsum(hits) / max(int(hits.sum()), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(~hits) / max(int((~hits).sum()), 1)])
    return fpr, tpr


def sensitivity_specificity(labels: ArrayLike, probabilities: ArrayLike,
                            threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity when ``probability >= threshold`` calls positive
    (NaN for a class that is absent)."""
    truth = np.asarray(labels, dtype=bool)
    called = np.asarray(probabilities) >= threshold
    sensitivity = called[truth].mean() if truth.any() else float("nan")
    specificity = (~called[~truth]).mean() if (~truth).any() else float("nan")
    return float(sensitivity), float(specificity)


def wilson(hits: int, n: int) -> list[float] | None:
    """Wilson score 95 % interval of ``hits / n``; None for no samples."""
    if n == 0:
        return None
    z = 1.959964
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def rate(hits: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """Share of ``True`` with its count; ``value`` is None for no samples."""
    return {"n": int(hits.size), "value": round(float(hits.mean()), 4) if hits.size else None}


# ------------------------------------------------------------------------ calibration


def _bin_index(probabilities: npt.NDArray[Any], bins: int) -> npt.NDArray[np.int_]:
    # a probability of exactly 1 belongs to the top bin, not to an eleventh one
    which: npt.NDArray[np.int_] = np.minimum((probabilities * bins).astype(int), bins - 1)
    return which


def expected_calibration_error(labels: ArrayLike, probabilities: ArrayLike,
                               bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width probability bins, each weighted by its share of
    the samples."""
    # probabilities keep their dtype (float32 from a network): the figures on the cards
    # were computed that way
    truth, predicted = np.asarray(labels, dtype=float), np.asarray(probabilities)
    which = _bin_index(predicted, bins)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(truth[inside].mean() - predicted[inside].mean())
    return float(error)


def reliability_bins(labels: ArrayLike, probabilities: ArrayLike,
                     bins: int = ECE_BINS) -> list[tuple[float, float, int]]:
    """``(mean probability, observed frequency, count)`` per non-empty bin."""
    truth, predicted = np.asarray(labels, dtype=float), np.asarray(probabilities)
    which = _bin_index(predicted, bins)
    return [(float(predicted[which == b].mean()), float(truth[which == b].mean()),
             int((which == b).sum())) for b in range(bins) if (which == b).any()]


# -------------------------------------------------------------------------- bootstrap


def ci95(draws: Sequence[float] | FloatArray) -> list[float]:
    """The percentile 95 % interval of bootstrap draws, rounded to 4 digits."""
    return [round(float(q), 4) for q in np.percentile(draws, (2.5, 97.5))]


def bootstrap_interval(statistic: Callable[[npt.NDArray[np.int64]], float], n: int,
                       samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[float]:
    """Percentile 95 % interval of ``statistic(indices)`` over resamples of ``range(n)``.

    Each resample is one ``integers(0, n, n)`` draw of a generator seeded with ``seed``;
    resamples where the statistic is undefined (NaN: a class missing) are skipped.
    """
    generator = np.random.default_rng(seed)
    values = [statistic(generator.integers(0, n, n)) for _ in range(samples)]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return [float("nan"), float("nan")]
    return ci95(values)


def mean_with_ci(values: FloatArray, rng: np.random.Generator, n: int) -> dict[str, Any]:
    """Mean and median of ``values`` with a bootstrap 95 % interval of the mean.

    The ``n`` resamples are drawn in one ``rng.choice`` call (an ``(n, size)`` array), the
    stream the card figures were made with; ``rng`` is shared with the caller's other
    summaries, so their order matters too.
    """
    if values.size == 0:
        return {"n": 0, "mean": None, "ci95": None}
    draws = rng.choice(values, size=(n, values.size), replace=True).mean(axis=1)
    return {"n": int(values.size), "mean": round(float(values.mean()), 4),
            "median": round(float(np.median(values)), 4), "ci95": ci95(draws)}


def auc_with_ci(positives: FloatArray, negatives: FloatArray, rng: np.random.Generator,
                n: int) -> dict[str, Any]:
    """AUC of two groups with a stratified bootstrap 95 % interval (each group resampled
    on its own, so every resample has both classes)."""
    if positives.size == 0 or negatives.size == 0:
        return {"n_positive": int(positives.size), "n_negative": int(negatives.size),
                "auc": None, "ci95": None}
    draws = [group_auc(rng.choice(positives, positives.size),
                       rng.choice(negatives, negatives.size)) for _ in range(n)]
    return {"n_positive": int(positives.size), "n_negative": int(negatives.size),
            "auc": round(group_auc(positives, negatives), 4), "ci95": ci95(draws)}


# ---------------------------------------------------------------------------- overlap


def dice_iou(predicted: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]
             ) -> tuple[float, float]:
    """Dice and IoU of two boolean masks; two empty masks agree perfectly (1, 1)."""
    overlap = float((predicted & truth).sum())
    total = float(predicted.sum() + truth.sum())
    if total == 0:
        return 1.0, 1.0
    return 2 * overlap / total, overlap / (total - overlap)


def dice_per_structure(logits: torch.Tensor, targets: torch.Tensor,
                       known: torch.Tensor) -> list[float]:
    """Mean hard Dice per channel of ``(N, C, H, W)`` logits over the samples whose label
    is known (``known`` ``(N, C)``, :data:`~cxr_core.training.data.KNOWN_MASK`; image-level
    labels have no mask to compare); an empty prediction of an empty target counts 1."""
    known = (known == KNOWN_MASK).float()
    predicted, truth = logits > 0, targets > 0.5
    overlap = (predicted & truth).sum(dim=(2, 3)).float()
    total = predicted.sum(dim=(2, 3)).float() + truth.sum(dim=(2, 3)).float()
    dice = torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total))
    return [float((dice[:, c] * known[:, c]).sum() / known[:, c].sum().clamp(min=1))
            for c in range(dice.shape[1])]
