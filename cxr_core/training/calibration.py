"""Turning a classifier's logits into probabilities people can read, and choosing the
operating threshold: Platt scaling and the most specific threshold at a target
sensitivity, both fitted on the val split."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

TARGET_SENSITIVITY = 0.90


def fit_platt(logits: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[float, float]:
    """``(scale, bias)`` minimising the cross-entropy of ``sigmoid(scale * logit + bias)``.

    The scale is kept positive (fitted as its log) so the ranking, hence AUC, is unchanged;
    the bias corrects what a temperature alone cannot: logits shifted as a whole.
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float64)
    parameters = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([parameters], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(parameters[0].exp() * z + parameters[1], y)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves backward untyped
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]  # torch leaves LBFGS.step untyped
    fitted = parameters.detach()
    return float(fitted[0].exp()), float(fitted[1])


def platt(logits: npt.ArrayLike, scale: float = 1.0, bias: float = 0.0
          ) -> npt.NDArray[np.float64]:
    """``sigmoid(scale * logits + bias)``; the defaults give the uncalibrated sigmoid."""
    return np.asarray(1 / (1 + np.exp(-(scale * np.asarray(logits) + bias))))


def threshold_for_sensitivity(labels: npt.ArrayLike, probabilities: npt.ArrayLike,
                              sensitivity: float = TARGET_SENSITIVITY) -> float:
    """The highest threshold whose sensitivity (``p >= threshold``) is at least
    ``sensitivity``: the most specific operating point that keeps that sensitivity.

    Raises
    ------
    ValueError
        When ``labels`` has no positive sample.
    """
    positives = np.sort(np.asarray(probabilities)[np.asarray(labels, dtype=bool)])[::-1]
    if positives.size == 0:
        raise ValueError("labels: no positive sample to choose a threshold on")
    needed = math.ceil(sensitivity * positives.size)
    return float(positives[needed - 1])
