"""``cxr train findings``: the multi-label findings classifier.

Training reads every shared source with labels for both classes: the NIH sets (normal /
pneumonia, 14-label, 64 px; all 14 NIH labels plus ``abnormal``), the pediatric Kermany
set (abnormal / pneumonia) and, optionally, the layouts users bring (NIH ``Data_Entry``
CSV, CheXpert CSV, MONAI datalist). So that neither the image source nor the view can
stand in for the label:

* inputs are rank-normalised (``equalize``): bit depth, window and gamma do not reach
  the network;
* batches are drawn so that within each source and view, abnormal and normal images weigh
  the same;
* every image is re-styled at random (resolution, blur, noise, JPEG) before it is seen.

Calibration (Platt per label) and thresholds are fitted on the NIH val split; a label
ships only when the val and test splits hold enough positives and its val AUC clears
:data:`SHIP_RULE` (decided before training); the others are dropped from the network and
the card says why. The shipped network is evaluated as the engine runs it
(:mod:`cxr_core.training.findings_evaluate`) and across sources
(:mod:`cxr_core.training.findings_sources`) into ``<out>/evaluation``.
"""

from __future__ import annotations

import math
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
from cxr_core.models.card import Normalization
from cxr_core.preprocess import EQUALIZE
from cxr_core.segmentation import Segmenter
from cxr_core.stages.findings import INPUT_MODES, LUNG_MASKED, FindingsClassifier
from cxr_core.training.augment import Chain, RandomAffineIntensity, SourceStyle
from cxr_core.training.calibration import TARGET_SENSITIVITY, fit_platt, platt
from cxr_core.training.calibration import threshold_for_sensitivity as threshold_at
from cxr_core.training.findings_data import (
    KERMANY,
    LABELS,
    NIH_DATASET,
    NIH_MULTILABEL,
    FindingsSample,
    FindingsTensors,
    kermany_samples,
    load_findings_tensors,
    nih_findings_samples,
    nih_multilabel_samples,
)
from cxr_core.training.findings_evaluate import (
    evaluate_findings,
    operating_figures,
    split_figures,
)
from cxr_core.training.findings_sources import evaluate_sources, transfer_limits
from cxr_core.training.loop import AucValidation, History, TrainConfig, predict_logits, train
from cxr_core.training.losses import masked_bce
from cxr_core.training.metrics import expected_calibration_error, roc_auc
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
REFERENCE_SOURCE = "nih"
"""Calibration, thresholds and the test figures are on full-resolution NIH images: the
adult source with both classes."""
SELECTION_SOURCES = ("nih", "kermany")
"""Val images that choose the epoch: mixing sources rewards scores that do not follow
the source."""
SHIP_RULE = {"min_val_positives": 5, "min_test_positives": 5, "min_val_auc": 0.6}
"""A label ships when the NIH val and test splits each hold this many positives and its
val AUC reaches this (fixed before training)."""
TRIAGE_LABELS = ("abnormal",)
"""Labels whose threshold keeps val sensitivity >= 0.9 (a triage rule); the others use
the val threshold with the best Youden index (sensitivity + specificity - 1)."""
NETWORK: dict[str, Any] = {
    "spatial_dims": 2, "in_channels": 1, "out_channels": len(LABELS),
    "init_features": 16, "growth_rate": 12, "block_config": [4, 8, 8],
}
DEFAULT_RUNTIME = RuntimeSettings(classifier=ClassifierRules())
DETAILS = {
    "labels_from": "NIH Data_Entry 'Finding Labels' (NLP-mined, noisy): abnormal = "
    "anything but 'No Finding', one label per NIH finding; Kermany: clinically graded "
    "pneumonia (abnormal = pneumonia there, other labels unknown)",
    "pretraining": "not tried (CPU budget); trained from random initialisation",
    "data_not_used": "hannover_covid_cxr and covid_cxr_v7lungs (every image abnormal, "
    "one source each): a source that is always positive teaches the source; they are "
    "unseen-source checks instead. covid_cxr_gb_lr_lungs overlaps V7. nih_cxr14_tiny64: "
    "64 px is below the engine's 128-px minimum (the engine refuses such images).",
    "against_shortcuts": "rank normalisation (equalize); batches balanced for abnormal "
    "within each source x view; SourceStyle re-styling (resolution 25-100 %, blur, "
    "noise, JPEG q30-95) on 80 % of images; lung-masked input (no burned-in markers, "
    "borders or collimation reach the network)",
    "calibration_method": f"Platt scaling per label on the {REFERENCE_SOURCE} val split",
    "threshold_rule": f"{', '.join(TRIAGE_LABELS)}: highest threshold with val "
    f"sensitivity >= {TARGET_SENSITIVITY}; other labels: best val Youden index "
    "(calibrated probabilities)",
    "ship_rule": SHIP_RULE,
    "heatmap_method": "class activation maps (equal to Grad-CAM for a GAP + linear head)",
}


def classifier_config(**changes: Any) -> TrainConfig:
    """The classifier's training settings (``changes`` override them): masked BCE, mean
    val AUC for selection, 15 % warm-up, batches of at least two (batch norm)."""
    return TrainConfig(
        epochs=25, batch_size=16, learning_rate=3e-3, weight_decay=1e-4, patience=8,
        max_minutes=9.0, loss=masked_bce, augment=RandomAffineIntensity(),
        validation=AucValidation(), warmup_fraction=0.15, min_batch_size=2,
        predict_batch_size=32).but(**changes)


def shared_findings_samples(data_root: Path) -> list[FindingsSample]:
    """Every shared image the classifier learns from: the two full-resolution NIH sets
    and Kermany, with their fixed splits."""
    return (nih_findings_samples(data_root) + nih_multilabel_samples(data_root)
            + kermany_samples(data_root))


def balanced_weights(samples: Sequence[FindingsSample]) -> torch.Tensor:
    """Drawing weights under which, within each (source, view) group, abnormal and normal
    images weigh the same; a group keeps its share of the data. Samples without an
    ``abnormal`` label get their group's mean weight."""
    weights = torch.ones(len(samples))
    groups: dict[tuple[str, str], list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault((sample.source, sample.view), []).append(index)
    for members in groups.values():
        classes = [[i for i in members if samples[i].labels.get("abnormal") == value]
                   for value in (0.0, 1.0)]
        if all(classes):
            for chosen in classes:
                weights[chosen] = len(members) / (2 * len(chosen))
    return weights


@dataclass
class LabelFit:
    """One label's calibration, threshold and val figures (NIH val split)."""

    label: str
    scale: float
    bias: float
    threshold: float
    val_auc: float
    val_positives: int
    test_positives: int
    ece: dict[str, float]
    test_auc: float | None = None
    test_auc_ci95: list[float] | None = None
    """On the NIH test split, for every label (shipped or not: the ranking does not
    depend on calibration)."""

    def ships(self) -> str | None:
        """None when the label ships, else why not."""
        least_val, least_test = SHIP_RULE["min_val_positives"], SHIP_RULE["min_test_positives"]
        if self.val_positives < least_val:
            return f"{self.val_positives} positives in the NIH val split (< {least_val})"
        if self.test_positives < least_test:
            return f"{self.test_positives} positives in the NIH test split (< {least_test})"
        if not self.val_auc >= SHIP_RULE["min_val_auc"]:
            return f"val AUC {self.val_auc:.3f} (< {SHIP_RULE['min_val_auc']})"
        return None


def youden_threshold(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """The threshold (one of the scores) with the best sensitivity + specificity - 1."""
    best, best_j = 0.5, -1.0
    positives, negatives = max(int(truth.sum()), 1), max(int((~truth).sum()), 1)
    for threshold in np.unique(probabilities):
        called = probabilities >= threshold
        j = (called & truth).sum() / positives + (~called & ~truth).sum() / negatives - 1
        if j > best_j:
            best, best_j = float(threshold), float(j)
    return best


def fit_labels(val_logits: np.ndarray, val: FindingsTensors, test: FindingsTensors,
               test_logits: np.ndarray) -> list[LabelFit]:
    """Platt scaling, threshold and ship decision per label on the reference val split."""
    fits = []
    ece = expected_calibration_error
    for c, label in enumerate(LABELS):
        truth = val.targets[:, c].numpy() > 0.5
        scale, bias = fit_platt(val_logits[:, c], truth) if truth.any() else (1.0, 0.0)
        after = platt(val_logits[:, c], scale, bias)
        if not truth.any():
            threshold = 0.5
        elif label in TRIAGE_LABELS:
            threshold = threshold_at(truth, after)
        else:
            threshold = youden_threshold(truth, after)
        test_truth = test.targets[:, c].numpy()
        test_auc: dict[str, Any] = {}
        if 0 < test_truth.sum() < test_truth.size:
            figures = operating_figures(test_truth > 0.5, test_logits[:, c], 0.0)
            test_auc = {"test_auc": figures["auc"], "test_auc_ci95": figures["auc_ci95"]}
        fits.append(LabelFit(
            label=label, scale=round(scale, 5), bias=round(bias, 5),
            # rounded down: rounding up would drop the positive the threshold sits on
            threshold=math.floor(threshold * 1e4) / 1e4,
            val_auc=round(roc_auc(truth, after), 4),
            val_positives=int(truth.sum()), test_positives=int(test_truth.sum()),
            ece={"val_before": round(ece(truth, platt(val_logits[:, c])), 4),
                 "val_after": round(ece(truth, after), 4),
                 "test_before": round(ece(test_truth, platt(test_logits[:, c])), 4),
                 "test_after": round(ece(test_truth, platt(test_logits[:, c], scale, bias)),
                                     4)}, **test_auc))
    return fits


def keep_outputs(network: torch.nn.Module, labels: Sequence[str]) -> torch.nn.Module:
    """A copy of the trained DenseNet whose output layer has only ``labels`` (in
    :data:`LABELS` order): labels that do not ship are not computed at all."""
    rows = [LABELS.index(label) for label in labels]
    kept = build_network("DenseNet", NETWORK | {"out_channels": len(rows)})
    state = network.state_dict()
    state["class_layers.out.weight"] = state["class_layers.out.weight"][rows]
    state["class_layers.out.bias"] = state["class_layers.out.bias"][rows]
    kept.load_state_dict(state)
    return kept.eval()


def train_findings(
    *, data_root: Path, out_dir: Path, command: str, config: TrainConfig,
    modes: Sequence[str] = (LUNG_MASKED,), size: int = 224,
    lung_model: str | Path = "lung_seg", dilation: float | None = None,
    extra: Sequence[FindingsSample] = (), extra_source: str | None = None,
    version: str | None = None, without: Sequence[str] = (),
) -> ModelCard:
    """Train one network per input mode on every source, keep the mode with the better
    val AUC, ship the labels the data supports; evaluate as the engine runs it and
    across sources into ``<out_dir>/evaluation``.

    ``without`` leaves sources out of training and selection (``kermany``: a
    leave-one-source-out run whose Kermany figures are then on an unseen hospital).
    """
    if REFERENCE_SOURCE in without:
        raise ValueError(f"without: {REFERENCE_SOURCE!r} calibrates the model and cannot be "
                         "left out")
    for mode in modes:
        if mode not in INPUT_MODES:
            raise ValueError(f"modes: unknown {mode!r}; known: {INPUT_MODES}")
    base = base_card(MODEL_NAME)
    base_rules = (base.runtime.classifier if base else None) or ClassifierRules()
    dilation = base_rules.lung_mask_dilation if dilation is None else dilation
    samples = [s for s in shared_findings_samples(data_root) + list(extra)
               if s.source not in without]
    train_samples = [s for s in samples if s.split == "train"]
    val_samples = [s for s in samples if s.split == "val" and s.source in SELECTION_SOURCES]
    test_samples = [s for s in samples if s.split == "test" and s.source == REFERENCE_SOURCE]
    grid = (size, size)
    segmenter = Segmenter.load(lung_model)  # lung masks as input, lung zones in evaluation
    masking = segmenter if LUNG_MASKED in modes else None
    tensors = {name: load_findings_tensors(items, grid, masking, dilation, EQUALIZE)
               for name, items in (("train", train_samples), ("val", val_samples),
                                   ("test", test_samples))}
    reference_val = tensors["val"].select(
        [i for i, s in enumerate(val_samples) if s.source == REFERENCE_SOURCE])
    config = config.but(sample_weights=balanced_weights(train_samples),
                        augment=Chain(RandomAffineIntensity(), SourceStyle()),
                        validation=AucValidation(
                            min_positives=int(SHIP_RULE["min_val_positives"])))
    started = time.monotonic()
    variants = []
    for mode in modes:
        torch.manual_seed(config.seed)  # the same initialisation for every mode
        network = build_network("DenseNet", NETWORK)
        network, history = train(network, tensors["train"].with_mode(mode),
                                 tensors["val"].with_mode(mode),
                                 config.but(label=f"training {mode}"))
        variants.append((mode, network, history, float(history_best(history))))
    mode, network, history, _ = max(variants, key=lambda v: v[3])
    val_logits = predict_logits(network, reference_val.with_mode(mode).inputs(),
                                config.predict_batch_size).numpy()
    test_logits = predict_logits(network, tensors["test"].with_mode(mode).inputs(),
                                 config.predict_batch_size).numpy()
    fits = fit_labels(val_logits, reference_val, tensors["test"], test_logits)
    shipped = [f for f in fits if f.ships() is None]
    if not shipped:
        raise ValueError("data: no label has enough val/test positives and val AUC to ship")
    labels = [f.label for f in shipped]
    network = keep_outputs(network, labels)
    probabilities = np.stack([platt(test_logits[:, LABELS.index(f.label)], f.scale, f.bias)
                              for f in shipped], axis=1)
    test_figures = split_figures(tensors["test"].targets.numpy()[:, [LABELS.index(la)
                                                                      for la in labels]],
                                 probabilities, [s.view for s in test_samples],
                                 [f.threshold for f in shipped], labels)
    rules = ClassifierRules(
        input="lung_masked" if mode == LUNG_MASKED else "whole_image",
        lung_mask_dilation=dilation,
        calibration={f.label: Platt(scale=f.scale, bias=f.bias) for f in shipped},
        thresholds={f.label: f.threshold for f in shipped}, heatmap_layer=base_rules.heatmap_layer)
    card = ModelCard(
        name=MODEL_NAME, version=next_version(base, version), task="classification",
        network=NetworkSpec(architecture="DenseNet",
                            kwargs=NETWORK | {"out_channels": len(labels)}, input_size=grid,
                            normalization=Normalization(method=EQUALIZE)),
        labels=labels,
        provenance=make_provenance(
            command=command, datasets=_datasets(data_root, extra, extra_source),
            counts=_counts(train_samples, val_samples, test_samples),
            selection="epoch with the best mean val AUC (NIH + Kermany val; labels with at "
            "least 5 val positives); input mode with the best val AUC; labels by the ship "
            "rule",
            seed=config.seed, minutes=(time.monotonic() - started) / 60,
            epochs_run=len(history),
            details=DETAILS | {
                "lung_model": segmenter.card.identifier,
                "torch_threads": torch.get_num_threads(), "batch_size": config.batch_size,
                "learning_rate": config.learning_rate, "epochs_max": config.epochs,
                "patience": config.patience, "input_modes": list(modes),
                "sources_left_out": list(without)}),
        description=carried_description(base, MODEL_NAME, "classification"),
        runtime=runtime_settings(fitted=RuntimeSettings(classifier=rules), base=base,
                                 default=DEFAULT_RUNTIME),
        evaluation={"split": "test", "source": REFERENCE_SOURCE, "input": mode,
                    "test": test_figures,
                    "labels": {f.label: {"val_auc": f.val_auc, "val_positives": f.val_positives,
                                         "test_positives": f.test_positives,
                                         "threshold": f.threshold, "ece": f.ece,
                                         "test_auc": f.test_auc,
                                         "test_auc_ci95": f.test_auc_ci95,
                                         "shipped": f.ships() is None,
                                         **({"why_not": f.ships()} if f.ships() else {})}
                               for f in fits},
                    "input_modes": {m: {"val_mean_auc": round(float(history_best(h)), 4),
                                        "epochs_run": len(h)} for m, _, h, _ in variants}},
    )
    save_model(network, card, out_dir, history=history)
    plot_curves(history, ["mean AUC"], out_dir / "training_curves.png", metric="auc")
    classifier = FindingsClassifier(network, card)
    evaluation = evaluate_findings(classifier, segmenter, test_samples,
                                   [s for s in samples if s.boxes], out_dir / "evaluation")
    card.evaluation["localisation"] = evaluation["localisation"]
    card.evaluation["engine_path_test_auc"] = {
        label: evaluation["figures"][label]["all"]["auc"] for label in labels}
    card.evaluation["sources"] = evaluate_sources(classifier, segmenter, data_root,
                                                  out_dir / "evaluation")
    card.description.limitations = transfer_limits(card)
    card.evaluation["evaluated_by"] = "cxr train findings (test split, after training)"
    save_model(network, card, out_dir, history=history)
    return card


def history_best(history: History) -> float:
    """The best val score of a run."""
    return max((record["val_score"] for record in history), default=float("nan"))


def _datasets(data_root: Path, extra: Sequence[FindingsSample],
              extra_source: str | None) -> list[str]:
    names = (NIH_DATASET, NIH_MULTILABEL, KERMANY)
    datasets = [dataset_source(data_root, name) for name in names]
    if extra:
        datasets.append(f"{extra_source or 'extra rows'} ({len(extra)} images)")
    return datasets


def _counts(*splits: Sequence[FindingsSample]) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for name, items in zip(("train", "val", "test"), splits, strict=True):
        counts[name] = len(items)
        by_source: dict[str, int] = {}
        for sample in items:
            by_source[sample.source] = by_source.get(sample.source, 0) + 1
        counts[f"{name}_by_source"] = by_source
    return counts
