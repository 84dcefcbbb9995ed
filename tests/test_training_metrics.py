"""The training metrics and calibration helpers against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cxr_core.training.calibration import fit_platt, platt, threshold_for_sensitivity
from cxr_core.training.metrics import (
    auc_with_ci,
    bootstrap_interval,
    ci95,
    dice_iou,
    dice_per_structure,
    expected_calibration_error,
    group_auc,
    mean_auc,
    mean_with_ci,
    rate,
    reliability_bins,
    roc_auc,
    roc_curve,
    sensitivity_specificity,
)

# Two positives (0.9, 0.4) and two negatives (0.1, 0.4). Pairs: 0.9 beats both (2),
# 0.4 beats 0.1 (1) and ties 0.4 (1/2): 3.5 of 4 pairs.
LABELS = np.array([1, 0, 1, 0])
SCORES = np.array([0.9, 0.1, 0.4, 0.4])


def test_auc_counts_pairs_with_ties_as_half() -> None:
    assert roc_auc(LABELS, SCORES) == 0.875
    assert group_auc([0.9, 0.4], [0.1, 0.4]) == 0.875
    assert roc_auc([1, 1, 0], [0.1, 0.2, 0.3]) == 0.0
    assert math.isnan(roc_auc([1, 1], [0.3, 0.4]))
    assert math.isnan(group_auc([0.3], []))


def test_group_auc_is_roc_auc_of_the_two_groups() -> None:
    generator = np.random.default_rng(4)
    positives, negatives = generator.normal(1, 1, 17).round(1), generator.normal(0, 1, 23).round(1)
    labels = np.r_[np.ones(17, bool), np.zeros(23, bool)]
    assert group_auc(positives, negatives) == roc_auc(labels, np.r_[positives, negatives])


def test_mean_auc_uses_known_labels_only() -> None:
    # label 0: known everywhere, ranked perfectly (AUC 1); label 1: row 1 (logit 9, a
    # positive) is unknown, and without it both positives score below the negative (AUC 0)
    logits = torch.tensor([[3.0, 0.0], [2.0, 9.0], [1.0, 1.0], [0.0, 2.0]])
    targets = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    known = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    assert mean_auc(logits, targets, known) == 0.5


def test_roc_curve_walks_down_the_scores() -> None:
    fpr, tpr = roc_curve([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.3])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.5, 1])


def test_sensitivity_and_specificity_at_a_threshold() -> None:
    labels, probabilities = [1, 1, 0, 0], [0.8, 0.5, 0.6, 0.1]
    assert sensitivity_specificity(labels, probabilities, 0.5) == (1.0, 0.5)
    assert sensitivity_specificity(labels, probabilities, 0.55) == (0.5, 0.5)
    sensitivity, specificity = sensitivity_specificity([0, 0], [0.1, 0.9], 0.5)
    assert math.isnan(sensitivity) and specificity == 0.5
    assert rate(np.array([True, False, True, True])) == {"n": 4, "value": 0.75}
    assert rate(np.array([], dtype=bool)) == {"n": 0, "value": None}


def test_calibration_error_and_reliability_bins() -> None:
    # bins of width 0.1: 0.05 -> bin 0 (label 0), 0.62 and 0.65 -> bin 6 (labels 1, 1),
    # 0.95 -> bin 9 (label 1); ECE = 1/4 * 0.05 + 2/4 * |1 - 0.635| + 1/4 * 0.05
    labels, probabilities = [0, 1, 1, 1], [0.05, 0.62, 0.65, 0.95]
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.2075)
    assert reliability_bins(labels, probabilities) == [
        (pytest.approx(0.05), 0.0, 1), (pytest.approx(0.635), 1.0, 2),
        (pytest.approx(0.95), 1.0, 1)]
    # a probability of exactly 1 falls in the top bin
    assert reliability_bins([1], [1.0]) == [(1.0, 1.0, 1)]
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0


def test_bootstrap_interval_resamples_indices_from_its_seed() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    interval = bootstrap_interval(lambda i: float(values[i].mean()), 5, samples=300, seed=7)
    generator = np.random.default_rng(7)
    draws = [float(values[generator.integers(0, 5, 5)].mean()) for _ in range(300)]
    assert interval == ci95(draws)
    assert 1 <= interval[0] < 3 < interval[1] <= 5
    assert bootstrap_interval(lambda i: 0.25, 5, samples=10) == [0.25, 0.25]
    assert all(math.isnan(v) for v in bootstrap_interval(lambda i: float("nan"), 5, samples=5))


def test_percentile_interval() -> None:
    assert ci95(np.arange(101.0)) == [2.5, 97.5]


def test_mean_with_ci_draws_all_resamples_in_one_call() -> None:
    values = np.array([0.2, 0.4, 0.9])
    summary = mean_with_ci(values, np.random.default_rng(0), 50)
    draws = np.random.default_rng(0).choice(values, size=(50, 3), replace=True).mean(axis=1)
    assert summary == {"n": 3, "mean": 0.5, "median": 0.4, "ci95": ci95(draws)}
    assert mean_with_ci(np.full(4, 0.5), np.random.default_rng(0), 20)["ci95"] == [0.5, 0.5]
    assert mean_with_ci(np.array([]), np.random.default_rng(0), 20) == {
        "n": 0, "mean": None, "ci95": None}


def test_auc_with_ci_resamples_each_group() -> None:
    separated = auc_with_ci(np.array([0.8, 0.9]), np.array([0.1, 0.2, 0.3]),
                            np.random.default_rng(0), 30)
    assert separated == {"n_positive": 2, "n_negative": 3, "auc": 1.0, "ci95": [1.0, 1.0]}
    mixed = auc_with_ci(np.array([0.9, 0.4]), np.array([0.1, 0.4]), np.random.default_rng(0), 30)
    assert mixed["auc"] == 0.875 and mixed["ci95"][0] <= 0.875 <= mixed["ci95"][1]
    assert auc_with_ci(np.array([]), np.array([0.1]), np.random.default_rng(0), 5)["auc"] is None


def test_dice_and_iou_of_masks() -> None:
    predicted = np.zeros((4, 4), bool)
    truth = np.zeros((4, 4), bool)
    predicted[0, :4] = True          # 4 pixels
    truth[0, 2:4] = truth[1, 2:4] = True  # 4 pixels, 2 shared
    dice, iou = dice_iou(predicted, truth)
    assert dice == 0.5 and iou == pytest.approx(1 / 3)
    assert dice_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == (1.0, 1.0)
    assert dice_iou(predicted, np.zeros((4, 4), bool)) == (0.0, 0.0)


def test_dice_per_structure_skips_unknown_labels() -> None:
    logits = -torch.ones(2, 2, 2, 2)
    targets = torch.zeros(2, 2, 2, 2)
    logits[0, 0, 0, :] = 1     # sample 0, channel 0: predicts row 0
    targets[0, 0, :, 0] = 1    # truth column 0: overlap 1, Dice 2*1/4 = 0.5
    targets[1, 0, 0, 0] = 1    # sample 1 misses its one pixel: Dice 0
    targets[1, 1, 1, 1] = 1    # channel 1 of sample 1 is unknown: not counted
    known = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # channel 0: (0.5 + 0) / 2; channel 1: sample 0 empty-empty = 1
    assert dice_per_structure(logits, targets, known) == [0.25, 1.0]


def test_threshold_is_the_most_specific_at_the_sensitivity() -> None:
    # positives 0.9, 0.8, 0.7, 0.2: 75 % sensitivity needs 3 of 4, so threshold 0.7
    labels, probabilities = [1, 1, 1, 1, 0], [0.9, 0.8, 0.7, 0.2, 0.5]
    assert threshold_for_sensitivity(labels, probabilities, 0.75) == 0.7
    assert threshold_for_sensitivity(labels, probabilities, 1.0) == 0.2
    with pytest.raises(ValueError, match="labels"):
        threshold_for_sensitivity([0, 0], [0.1, 0.2])


def test_platt_and_its_fit() -> None:
    assert platt([0.0])[0] == 0.5
    assert platt([1.0], scale=2.0, bias=-2.0)[0] == 0.5
    assert platt([0.0], bias=math.log(3))[0] == pytest.approx(0.75)
    # labels drawn from sigmoid(z / 2 - 1): the fit recovers scale 1/2 and bias -1
    generator = np.random.default_rng(5)
    logits = generator.normal(0, 3, 20000)
    labels = generator.uniform(size=logits.size) < platt(logits, 0.5, -1.0)
    scale, bias = fit_platt(logits, labels)
    assert scale == pytest.approx(0.5, rel=0.1) and bias == pytest.approx(-1.0, abs=0.1)
