"""Does the findings classifier follow the disease or the image source?

Figures on images from sources the classifier was not calibrated on, as the engine runs
it (conditioned image, lungs from the segmenter, calibrated probabilities, the card's
thresholds):

* ``kermany``: the pediatric test split (another hospital, both classes): AUC, and
  sensitivity / specificity at the card's (NIH) threshold and at the threshold the same
  rule picks on Kermany's own val split (the per-source operating point);
* ``hannover``, ``v7``: COVID-19 sets, every image abnormal, never trained on: how many
  of their val and test images are called abnormal;
* ``reencoded``: the NIH test images changed the way other sources and archives change
  images (JPEG, rescaling, gamma, burned-in text, a 224 x 224 squash like Kermany's):
  AUC on the changed copies, mean change of the probability and decisions flipped
  against the untouched image.

:func:`transfer_limits` turns these figures into the card's limitation statements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from tqdm import tqdm

from cxr_core.io import read_radiograph
from cxr_core.measure import lung_union
from cxr_core.models import ModelCard
from cxr_core.padding import condition
from cxr_core.segmentation import Segmenter
from cxr_core.stages.findings import FindingsClassifier
from cxr_core.training.calibration import threshold_for_sensitivity
from cxr_core.training.findings_data import (
    FindingsSample,
    abnormal_only_samples,
    kermany_samples,
    nih_findings_samples,
    nih_multilabel_samples,
)
from cxr_core.training.findings_evaluate import operating_figures
from cxr_core.training.metrics import wilson
from cxr_core.training.robustness import CHANGES

Pixels = npt.NDArray[np.float32]
REENCODINGS = ("JPEG q30", "downscaled to 256", "gamma 0.5", "text burned in")
"""Changes from :data:`cxr_core.training.robustness.CHANGES` applied to NIH test images."""
CHECK_SPLITS = ("val", "test")
"""Splits of the never-trained COVID-19 sets that are checked (all would do; these keep
the check's time in bounds on 2 cores)."""
SOURCE_LABELS = ("abnormal", "pneumonia")
"""The labels the other sources carry."""


def _squash_224(image: Pixels) -> Pixels:
    """Kermany's encoding: squashed to 224 x 224 (aspect ratio lost), 8 bits."""
    resized = Image.fromarray(image.astype(np.float32)).resize((224, 224),
                                                               Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32).round()


def classify(classifier: FindingsClassifier, segmenter: Segmenter | None,
             pixels: Pixels) -> npt.NDArray[np.float32]:
    """Calibrated probabilities of one image, as the engine's findings stage computes
    them (conditioned image; lung-masked with the segmenter's lungs when the card says)."""
    conditioned, _ = condition(pixels)
    lungs = None
    if classifier.lung_masked:
        if segmenter is None:
            raise ValueError("segmenter: a lung-masked classifier needs the lung model")
        lungs = lung_union(segmenter(conditioned).masks)
        if lungs is None or not lungs.any():
            lungs = np.ones(conditioned.shape, dtype=bool)  # as the stage does
    return np.asarray(classifier.probabilities(classifier.input(conditioned, lungs))[0],
                      dtype=np.float32)


def _predict(classifier: FindingsClassifier, segmenter: Segmenter | None,
             samples: Sequence[FindingsSample], label: str,
             change: Callable[[Pixels], Pixels] | None = None) -> npt.NDArray[np.float32]:
    """``(N, labels)`` probabilities of ``samples`` (each changed by ``change``)."""
    rows = []
    for sample in tqdm(samples, desc=label, unit="image", leave=False):
        pixels = read_radiograph(sample.image).pixels
        rows.append(classify(classifier, segmenter, change(pixels) if change else pixels))
    return np.stack(rows) if rows else np.zeros((0, len(classifier.card.labels)), np.float32)


def _truth(samples: Sequence[FindingsSample], label: str) -> npt.NDArray[np.bool_]:
    return np.array([s.labels.get(label, 0.0) > 0.5 for s in samples], dtype=bool)


def _labelled(classifier: FindingsClassifier, samples: Sequence[FindingsSample],
              probabilities: npt.NDArray[np.float32],
              labels: Sequence[str]) -> dict[str, Any]:
    """Operating figures per label (of ``labels`` the card has) at the card's threshold."""
    figures = {}
    for label in labels:
        if label not in classifier.card.labels:
            continue
        column = classifier.card.labels.index(label)
        known = [i for i, s in enumerate(samples) if label in s.labels]
        truth = _truth([samples[i] for i in known], label)
        if truth.all() or not truth.any():
            continue
        figures[label] = operating_figures(truth, probabilities[known, column],
                                           classifier.thresholds[column])
    return figures


def kermany_figures(classifier: FindingsClassifier, segmenter: Segmenter | None,
                    data_root: Path) -> dict[str, Any]:
    """Test figures at the card's threshold and at Kermany's own operating point."""
    samples = kermany_samples(data_root)
    val = [s for s in samples if s.split == "val"]
    test = [s for s in samples if s.split == "test"]
    val_p = _predict(classifier, segmenter, val, "kermany val")
    test_p = _predict(classifier, segmenter, test, "kermany test")
    figures: dict[str, Any] = {"n": len(test), "at_card_threshold": _labelled(
        classifier, test, test_p, SOURCE_LABELS)}
    own: dict[str, Any] = {}
    for label in SOURCE_LABELS:
        if label not in classifier.card.labels:
            continue
        column = classifier.card.labels.index(label)
        threshold = threshold_for_sensitivity(_truth(val, label), val_p[:, column])
        own[label] = {"threshold": round(threshold, 4)} | operating_figures(
            _truth(test, label), test_p[:, column], threshold)
    figures["at_own_threshold"] = own
    return figures


def abnormal_only_figures(classifier: FindingsClassifier, segmenter: Segmenter | None,
                          data_root: Path) -> dict[str, Any]:
    """Per COVID-19 source: the share called abnormal (Wilson 95 % CI), mean probability."""
    if "abnormal" not in classifier.card.labels:
        return {}
    column = classifier.card.labels.index("abnormal")
    samples = [s for s in abnormal_only_samples(data_root) if s.split in CHECK_SPLITS]
    figures = {}
    for source in sorted({s.source for s in samples}):
        chosen = [s for s in samples if s.source == source]
        scores = _predict(classifier, segmenter, chosen, source)[:, column]
        hits = int((scores >= classifier.thresholds[column]).sum())
        figures[source] = {"called_abnormal": {"hits": hits, "n": len(chosen),
                                               "ci95": wilson(hits, len(chosen))},
                           "mean_probability": round(float(scores.mean()), 4)}
    return figures


def reencoded_figures(classifier: FindingsClassifier, segmenter: Segmenter | None,
                      samples: Sequence[FindingsSample]) -> dict[str, Any]:
    """Each re-encoding of the NIH test images against the untouched images."""
    changes: dict[str, Callable[[Pixels], Pixels]] = {
        c.name: c.apply for c in CHANGES if c.name in REENCODINGS}
    changes["squashed to 224 (Kermany)"] = _squash_224
    reference = _predict(classifier, segmenter, samples, "untouched")
    thresholds = np.asarray(classifier.thresholds)
    labels = [la for la in SOURCE_LABELS if la in classifier.card.labels]
    table: dict[str, Any] = {"n": len(samples),
                             "untouched": _labelled(classifier, samples, reference, labels)}
    for name, change in changes.items():
        changed = _predict(classifier, segmenter, samples, name, change)
        row: dict[str, Any] = {"figures": _labelled(classifier, samples, changed, labels)}
        for label in labels:
            column = classifier.card.labels.index(label)
            flipped = (changed[:, column] >= thresholds[column]) != (
                reference[:, column] >= thresholds[column])
            row[label] = {"mean_abs_change": round(float(np.abs(
                changed[:, column] - reference[:, column]).mean()), 4),
                "flipped": int(flipped.sum())}
        table[name] = row
    return table


def evaluate_sources(classifier: FindingsClassifier, segmenter: Segmenter | None,
                     data_root: Path, out_dir: Path | None = None) -> dict[str, Any]:
    """Every cross-source figure of this module (``out_dir`` is reserved for plots)."""
    nih_test = [s for s in nih_findings_samples(data_root) + nih_multilabel_samples(data_root)
                if s.split == "test"]
    return {
        "kermany": kermany_figures(classifier, segmenter, data_root),
        "abnormal_only": abnormal_only_figures(classifier, segmenter, data_root),
        "reencoded": reencoded_figures(classifier, segmenter, nih_test),
    }


# ------------------------------------------------------------------------- limits


def _auc(figures: dict[str, Any]) -> str:
    low, high = figures["auc_ci95"]
    counts = f"{figures['n_positive']}/{figures['n']}"
    return f"AUC {figures['auc']:.2f} [{low:.2f}-{high:.2f}] ({counts})"


def leave_one_source_out(run_card: ModelCard) -> dict[str, Any]:
    """The left-out sources of a ``cxr train findings --without SOURCE`` run, as the shipped
    card records them: per left-out source, the run's command and weights, its figures on
    that source's test split (never trained on) and on the NIH test split."""
    left_out = run_card.provenance.details.get("sources_left_out") or []
    if not left_out:
        raise ValueError(f"leave_out_run: {run_card.identifier} left no source out of "
                         "training (cxr train findings --without SOURCE makes such a run)")
    evaluation = run_card.evaluation
    nih = evaluation.get("test", {}).get("abnormal", {}).get("all")
    return {source: {"command": run_card.provenance.command,
                     "weights_sha256": run_card.weights_sha256,
                     "figures": evaluation.get("sources", {}).get(source, {}),
                     "nih_test_abnormal": nih} for source in left_out}


def transfer_limits(card: ModelCard) -> list[str]:
    """Limitation statements generated from the card's figures (they cannot drift)."""
    evaluation = card.evaluation
    limits = ["Labels are NLP-mined from NIH reports (noisy); Kermany's pneumonia is "
              "clinically graded in children: the label definitions differ between sources.",
              "Trained from random initialisation on a few thousand images on 2 CPU cores; "
              "research use, not a medical device."]
    test = evaluation.get("test", {})
    if test:
        limits.append("NIH test split: " + "; ".join(
            f"{label} {_auc(figures['all'])}" for label, figures in test.items()) + ".")
    dropped = {label: fit["why_not"] for label, fit in evaluation.get("labels", {}).items()
               if not fit.get("shipped", True)}
    if dropped:
        limits.append("Not reported (too little data to calibrate or check): " + "; ".join(
            f"{label}: {why}" for label, why in dropped.items()) + ".")
    sources = evaluation.get("sources", {})
    kermany = sources.get("kermany", {})
    for label, figures in kermany.get("at_card_threshold", {}).items():
        own = kermany.get("at_own_threshold", {}).get(label, {})
        limits.append(
            f"Pediatric Kermany test ({label}): {_auc(figures)}; at the NIH threshold "
            f"sensitivity {figures['sensitivity']:.2f}, specificity "
            f"{figures['specificity']:.2f}" + (
                f"; Kermany's own operating point would be {own['threshold']:.3f} "
                f"(sensitivity {own['sensitivity']:.2f}, specificity "
                f"{own['specificity']:.2f})" if own else "") + ".")
    for source, figures in sources.get("abnormal_only", {}).items():
        called = figures["called_abnormal"]
        low, high = called.get("ci95") or (0.0, 1.0)
        limits.append(f"{source} (COVID-19, never trained on): called abnormal in "
                      f"{called['hits']}/{called['n']} [{low:.2f}-{high:.2f}].")
    for source, run in card.evaluation.get("leave_one_source_out", {}).items():
        figures = run["figures"].get("at_card_threshold", {}).get("abnormal")
        if figures:
            limits.append(
                f"Left out of training, {source} reads {_auc(figures)} (abnormal); at the NIH "
                f"threshold sensitivity {figures['sensitivity']:.2f}, specificity "
                f"{figures['specificity']:.2f}: a source without normals in training is read "
                "as abnormal; a site should bring its own normals.")
    reencoded = sources.get("reencoded", {})
    worst = [(name, row[label]["mean_abs_change"], row[label]["flipped"], label)
             for name, row in reencoded.items() if isinstance(row, dict) and "figures" in row
             for label in SOURCE_LABELS if label in row]
    if worst:
        name, change, flipped, label = max(worst, key=lambda w: w[1])
        limits.append(f"Re-encoding the NIH test images moves {label} the most under "
                      f"'{name}': mean change {change:.3f}, {flipped}/{reencoded['n']} "
                      "decisions flipped.")
    return limits
