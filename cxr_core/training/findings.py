"""``cxr train findings``: the abnormal / pneumonia classifier.

Training reads the NIH normal/pneumonia set (labels from the NIH table, in its manifest)
and, optionally, an NIH-style ``Data_Entry`` CSV with its image folder. It trains one
small MONAI DenseNet per input mode (whole image, lung-masked with our lung segmenter),
calibrates each on the val split (Platt scaling per label), picks the operating threshold
per label on val (sensitivity >= 0.90), reports test figures with bootstrap 95 % intervals
(overall, AP, PA) and ships the mode with the better val AUC. That network is then
evaluated as the engine runs it (:mod:`cxr_core.training.findings_evaluate`) into
``<out>/evaluation``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxr_core.models import (
    ClassifierRules,
    ModelCard,
    NetworkSpec,
    Platt,
    RuntimeSettings,
    build_network,
    save_model,
)
from cxr_core.segmentation import Segmenter
from cxr_core.stages.findings import INPUT_MODES, LUNG_MASKED, FindingsClassifier
from cxr_core.training.augment import RandomAffineIntensity
from cxr_core.training.calibration import TARGET_SENSITIVITY, fit_platt, platt
from cxr_core.training.calibration import threshold_for_sensitivity as threshold_at
from cxr_core.training.findings_data import (
    LABELS,
    NIH_DATASET,
    FindingsSample,
    FindingsTensors,
    load_findings_tensors,
    nih_findings_samples,
)
from cxr_core.training.findings_evaluate import VIEWS, evaluate_findings, split_figures
from cxr_core.training.loop import AucValidation, History, TrainConfig, predict_logits, train
from cxr_core.training.losses import masked_bce
from cxr_core.training.metrics import expected_calibration_error, mean_auc
from cxr_core.training.plots import plot_curves
from cxr_core.training.provenance import (
    base_card,
    carried_description,
    dataset_source,
    make_provenance,
    next_version,
    runtime_settings,
)

MODEL_NAME = "findings"
NETWORK: dict[str, Any] = {
    "spatial_dims": 2, "in_channels": 1, "out_channels": len(LABELS),
    "init_features": 16, "growth_rate": 12, "block_config": [4, 8, 8],
}
DEFAULT_RUNTIME = RuntimeSettings(classifier=ClassifierRules())
DETAILS = {
    "labels_from": "NIH Data_Entry 'Finding Labels' (NLP-mined, noisy): abnormal = "
    "anything but 'No Finding'; pneumonia = 'Pneumonia' among the labels. In this set "
    "every abnormal image carries Pneumonia, so the two labels are identical here; the "
    "head is multi-label so other findings/data can separate them later.",
    "pretraining": "not tried (CPU budget); trained from random initialisation",
    "data_not_used": "hannover_covid_cxr (243 COVID-19 CR images, all abnormal, one "
    "hospital): every image positive from one source would let the network learn the "
    "source instead of the finding; nih_cxr14_tiny64 is 64 px (too small).",
    "calibration_method": "Platt scaling per label on the val split",
    "threshold_rule": f"highest threshold with val sensitivity >= {TARGET_SENSITIVITY} "
    "(calibrated probabilities)",
    "heatmap_method": "Grad-CAM (monai)",
}


def classifier_config(**changes: Any) -> TrainConfig:
    """The classifier's training settings (``changes`` override them): masked BCE, mean
    val AUC for selection, 15 % warm-up, batches of at least two (batch norm)."""
    return TrainConfig(
        epochs=25, batch_size=16, learning_rate=3e-3, weight_decay=1e-4, patience=8,
        max_minutes=9.0, loss=masked_bce, augment=RandomAffineIntensity(),
        validation=AucValidation(), warmup_fraction=0.15, min_batch_size=2,
        predict_batch_size=32).but(**changes)


@dataclass
class TrainedVariant:
    """One input mode's network, calibrated on val, with its test figures."""

    mode: str
    network: torch.nn.Module
    history: History
    val_auc: float
    thresholds: dict[str, float]
    calibration: dict[str, Any]
    test: dict[str, Any]


def calibrate_and_test(mode: str, network: torch.nn.Module, history: History,
                       val: FindingsTensors, test: FindingsTensors,
                       test_views: Sequence[str],
                       predict_batch_size: int = 32) -> TrainedVariant:
    """Calibration and thresholds from val; figures on test (same preprocessing)."""
    ece = expected_calibration_error
    val_logits = predict_logits(network, val.with_mode(mode).inputs(), predict_batch_size).numpy()
    test_logits = predict_logits(network, test.with_mode(mode).inputs(),
                                 predict_batch_size).numpy()
    val_truth, test_truth = val.targets.numpy(), test.targets.numpy()
    thresholds, calibration = {}, {}
    probabilities = np.zeros_like(test_logits)
    for c, label in enumerate(LABELS):
        scale, bias = fit_platt(val_logits[:, c], val_truth[:, c])
        after = platt(val_logits[:, c], scale, bias)
        thresholds[label] = round(threshold_at(val_truth[:, c], after), 4)
        probabilities[:, c] = platt(test_logits[:, c], scale, bias)
        calibration[label] = {
            "scale": round(scale, 5), "bias": round(bias, 5),
            "val_ece_before": round(ece(val_truth[:, c], platt(val_logits[:, c])), 4),
            "val_ece_after": round(ece(val_truth[:, c], after), 4),
            "test_ece_before": round(ece(test_truth[:, c], platt(test_logits[:, c])), 4),
            "test_ece_after": round(ece(test_truth[:, c], probabilities[:, c]), 4),
        }
    figures = split_figures(test_truth, probabilities, test_views,
                            [thresholds[la] for la in LABELS])
    val_auc = mean_auc(torch.from_numpy(val_logits), val.targets, val.known)
    return TrainedVariant(mode, network, history, val_auc, thresholds, calibration, figures)


def train_findings(
    *, data_root: Path, out_dir: Path, command: str, config: TrainConfig,
    modes: Sequence[str] = INPUT_MODES, size: int = 224, lung_model: str | Path = "lung_seg",
    dilation: float | None = None, extra: Sequence[FindingsSample] = (),
    extra_source: str | None = None, version: str | None = None,
) -> ModelCard:
    """Train one network per input mode, ship the one with the better val AUC.

    The shipped network is then evaluated as the engine runs it (source images, lungs
    from the segmenter) into ``<out_dir>/evaluation``; its heat-map figures go into the
    card. Calibration, thresholds and the input mode are fitted here; the lung-mask
    ``dilation`` and heat-map layer come from the base card unless given.
    """
    for mode in modes:
        if mode not in INPUT_MODES:
            raise ValueError(f"modes: unknown {mode!r}; known: {INPUT_MODES}")
    base = base_card(MODEL_NAME)
    base_rules = (base.runtime.classifier if base else None) or ClassifierRules()
    dilation = base_rules.lung_mask_dilation if dilation is None else dilation
    samples = nih_findings_samples(data_root) + list(extra)
    by_split = {s: [x for x in samples if x.split == s] for s in ("train", "val", "test")}
    grid = (size, size)
    segmenter = Segmenter.load(lung_model) if LUNG_MASKED in modes else None
    tensors = {split: load_findings_tensors(items, grid, segmenter, dilation)
               for split, items in by_split.items()}
    started = time.monotonic()
    variants = []
    for mode in modes:
        torch.manual_seed(config.seed)  # the same initialisation for every mode
        network = build_network("DenseNet", NETWORK)
        network, history = train(network, tensors["train"].with_mode(mode),
                                 tensors["val"].with_mode(mode),
                                 config.but(label=f"training {mode}"))
        variants.append(calibrate_and_test(mode, network, history, tensors["val"],
                                           tensors["test"], [s.view for s in by_split["test"]],
                                           config.predict_batch_size))
    chosen = max(variants, key=lambda v: v.val_auc)
    rules = ClassifierRules(
        input="lung_masked" if chosen.mode == LUNG_MASKED else "whole_image",
        lung_mask_dilation=dilation,
        calibration={la: Platt(scale=chosen.calibration[la]["scale"],
                               bias=chosen.calibration[la]["bias"]) for la in LABELS},
        thresholds=chosen.thresholds, heatmap_layer=base_rules.heatmap_layer)
    datasets = [dataset_source(data_root, NIH_DATASET)]
    if extra:
        datasets.append(f"NIH table: {extra_source or 'extra rows'} ({len(extra)} images)")
    card = ModelCard(
        name=MODEL_NAME, version=next_version(base, version), task="classification",
        network=NetworkSpec(architecture="DenseNet", kwargs=NETWORK, input_size=grid),
        labels=list(LABELS),
        provenance=make_provenance(
            command=command, datasets=datasets,
            counts={k: len(v) for k, v in by_split.items()},
            selection="epoch with the best mean val AUC; input mode with the best val AUC",
            seed=config.seed, minutes=(time.monotonic() - started) / 60,
            epochs_run=len(chosen.history),
            details=DETAILS | {
                "lung_model": segmenter.card.identifier if segmenter else None,
                "torch_threads": torch.get_num_threads(), "batch_size": config.batch_size,
                "learning_rate": config.learning_rate, "epochs_max": config.epochs,
                "patience": config.patience}),
        description=carried_description(base, MODEL_NAME, "classification"),
        runtime=runtime_settings(fitted=RuntimeSettings(classifier=rules), base=base,
                                 default=DEFAULT_RUNTIME),
        evaluation=_evaluation(chosen, variants),
    )
    save_model(chosen.network, card, out_dir, history=chosen.history)
    plot_curves(chosen.history, ["mean AUC"], out_dir / "training_curves.png", metric="auc")
    evaluation = evaluate_findings(
        FindingsClassifier(chosen.network, card),
        segmenter if chosen.mode == LUNG_MASKED else None, by_split["test"],
        [s for s in samples if s.boxes], out_dir / "evaluation")
    card.evaluation["localisation"] = evaluation["localisation"]
    card.evaluation["engine_path_test_auc"] = {
        label: evaluation["figures"][label]["all"]["auc"] for label in LABELS}
    card.evaluation["evaluated_by"] = "cxr train findings (test split, after training)"
    save_model(chosen.network, card, out_dir, history=chosen.history)
    return card


def _evaluation(chosen: TrainedVariant, variants: Sequence[TrainedVariant]) -> dict[str, Any]:
    """The card's figures from training: the shipped mode's calibration and test figures,
    and every mode's val and test AUC (why this mode was shipped)."""
    return {
        "split": "test", "input": chosen.mode, "calibration": chosen.calibration,
        "test": chosen.test,
        "input_modes": {v.mode: {"val_mean_auc": round(v.val_auc, 4),
                                 "epochs_run": len(v.history),
                                 "test_auc": {la: v.test[la]["all"]["auc"] for la in LABELS},
                                 "test_auc_ci95": {la: v.test[la]["all"]["auc_ci95"]
                                                   for la in LABELS},
                                 "test_auc_by_view": {la: {vw: v.test[la][vw]["auc"]
                                                           for vw in VIEWS if vw in v.test[la]}
                                                      for la in LABELS}}
                        for v in variants},
    }

