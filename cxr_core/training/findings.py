"""``cxr train findings`` / ``cxr evaluate findings``: abnormal and pneumonia.

Training reads the NIH normal/pneumonia set (labels from the NIH table, in its manifest)
and, optionally, an NIH-style ``Data_Entry`` CSV with its image folder. It trains one
small MONAI DenseNet per input mode (whole image, lung-masked with our lung segmenter),
calibrates each on the val split (Platt scaling per label), picks the operating threshold
per label on val (sensitivity >= 0.90), reports test figures with bootstrap 95 % intervals
(overall, AP, PA) and ships the mode with the better val AUC.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.stats import rankdata
from tqdm import tqdm

from cxr_core.explain import peak_location
from cxr_core.findings import (
    FINDING_CODES,
    INPUT_MODES,
    LUNG_MASKED,
    LUNG_SEGMENTS,
    FindingsClassifier,
    FindingsInput,
)
from cxr_core.io import read_radiograph
from cxr_core.models import ModelCard
from cxr_core.models.card import save_model
from cxr_core.segmentation import Segmenter
from cxr_core.training.augment import RandomAffineIntensity
from cxr_core.training.lung import git_commit
from cxr_core.training.plots import (
    heatmap_rgb,
    plot_calibration,
    plot_confusion,
    plot_curves,
    plot_roc,
    save_montage,
)

log = logging.getLogger(__name__)

LABELS = ("abnormal", "pneumonia")
NIH_DATASET = "nih_cxr14_normal_pneumonia"
NO_FINDING = "No Finding"
VIEWS = ("AP", "PA")
TARGET_SENSITIVITY = 0.90
BOOTSTRAP_SAMPLES = 2000
ECE_BINS = 10
HEATMAP_IOU_LEVEL = 0.5
NETWORK = {
    "spatial_dims": 2, "in_channels": 1, "out_channels": len(LABELS),
    "init_features": 16, "growth_rate": 12, "block_config": [4, 8, 8],
}


@dataclass
class FindingsSample:
    image: Path
    labels: dict[str, float]
    """0/1 per label name; a label that is absent here is unknown for this image."""
    split: str = "train"
    view: str = ""
    boxes: list[tuple[str, float, float, float, float]] = field(default_factory=list)
    """``(finding, x, y, width, height)`` in image pixels."""
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or self.image.stem


# ----------------------------------------------------------------------------- data


def nih_labels(finding_labels: str) -> dict[str, float]:
    """NIH ``Finding Labels`` (pipe-separated) -> abnormal / pneumonia targets."""
    findings = {f.strip() for f in finding_labels.split("|") if f.strip()}
    if not findings:
        raise ValueError("finding_labels: empty; expected 'No Finding' or NIH findings")
    normal = findings == {NO_FINDING}
    return {"abnormal": float(not normal), "pneumonia": float("Pneumonia" in findings)}


def parse_boxes(text: str) -> list[tuple[str, float, float, float, float]]:
    """``Finding:x,y,w,h;Finding:x,y,w,h`` (the manifest's ``nih_bbox_resized_xywh``)."""
    boxes = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, numbers = part.partition(":")
        x, y, w, h = (float(v) for v in numbers.split(","))
        boxes.append((name, x, y, w, h))
    return boxes


def nih_findings_samples(data_root: Path) -> list[FindingsSample]:
    """The shared NIH normal/pneumonia set with its fixed patient-disjoint splits."""
    root = data_root / NIH_DATASET
    with (root / "manifest.csv").open(newline="") as handle:
        return [FindingsSample(image=root / row["image"], labels=nih_labels(row["label_findings"]),
                               split=row["split"], view=row["view"],
                               boxes=parse_boxes(row["nih_bbox_resized_xywh"]))
                for row in csv.DictReader(handle)]


def nih_table_samples(table: Path, image_dir: Path, split: str = "train") -> list[FindingsSample]:
    """An NIH ``Data_Entry``-style CSV (``Image Index``, ``Finding Labels``,
    ``View Position``) whose images are in ``image_dir``; rows without an image are skipped."""
    samples = []
    with Path(table).open(newline="") as handle:
        for row in csv.DictReader(handle):
            image = Path(image_dir) / row["Image Index"]
            if image.is_file():
                samples.append(FindingsSample(image=image, labels=nih_labels(row["Finding Labels"]),
                                              split=split, view=row.get("View Position", "")))
    return samples


@dataclass
class FindingsTensors:
    """Whole-image inputs ``(N,1,h,w)``, dilated lung masks ``(N,1,h,w)`` (bool),
    targets and known flags ``(N, labels)``."""

    images: torch.Tensor
    masks: torch.Tensor
    targets: torch.Tensor
    known: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def inputs(self, mode: str) -> torch.Tensor:
        return self.images * self.masks if mode == LUNG_MASKED else self.images


def load_findings_tensors(samples: Sequence[FindingsSample], size: tuple[int, int],
                          segmenter: Segmenter | None, dilation: float) -> FindingsTensors:
    """Read every image once; lung masks come from ``segmenter`` (None: no masking)."""
    to_input = FindingsInput(size, LUNG_MASKED, dilation)
    images, masks = [], []
    for sample in tqdm(samples, desc="reading", unit="image", leave=False):
        pixels = read_radiograph(sample.image).pixels
        images.append(to_input.to_input(pixels)[0])
        if segmenter is None:
            masks.append(torch.ones(1, *size, dtype=torch.bool))
            continue
        lungs = np.logical_or.reduce([segmenter(pixels).masks[n] for n in LUNG_SEGMENTS])
        masks.append(to_input.network_mask(lungs)[0].bool())
    targets = torch.tensor([[s.labels.get(label, 0.0) for label in LABELS] for s in samples])
    known = torch.tensor([[float(label in s.labels) for label in LABELS] for s in samples])
    return FindingsTensors(torch.stack(images), torch.stack(masks), targets, known)


# -------------------------------------------------------------------------- metrics


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN without both classes."""
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(false positive rate, true positive rate)`` over every threshold, from (0, 0)."""
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = labels[order]
    tpr = np.concatenate([[0.0], np.cumsum(hits) / max(hits.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(~hits) / max((~hits).sum(), 1)])
    return fpr, tpr


def sensitivity_specificity(labels: np.ndarray, probabilities: np.ndarray,
                            threshold: float) -> tuple[float, float]:
    labels = np.asarray(labels, dtype=bool)
    called = np.asarray(probabilities) >= threshold
    sensitivity = called[labels].mean() if labels.any() else float("nan")
    specificity = (~called[~labels]).mean() if (~labels).any() else float("nan")
    return float(sensitivity), float(specificity)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width probability bins (weighted by bin size)."""
    labels, probabilities = np.asarray(labels, dtype=float), np.asarray(probabilities)
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(labels[inside].mean() - probabilities[inside].mean())
    return float(error)


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray,
                     bins: int = ECE_BINS) -> list[tuple[float, float, int]]:
    """``(mean probability, observed frequency, count)`` per non-empty bin."""
    which = np.minimum((np.asarray(probabilities) * bins).astype(int), bins - 1)
    return [(float(probabilities[which == b].mean()), float(labels[which == b].mean()),
             int((which == b).sum())) for b in range(bins) if (which == b).any()]


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
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
        loss.backward()
        return loss

    optimizer.step(closure)
    fitted = parameters.detach()
    return float(fitted[0].exp()), float(fitted[1])


def platt(logits: np.ndarray, scale: float = 1.0, bias: float = 0.0) -> np.ndarray:
    return 1 / (1 + np.exp(-(scale * np.asarray(logits) + bias)))


def threshold_for_sensitivity(labels: np.ndarray, probabilities: np.ndarray,
                              sensitivity: float = TARGET_SENSITIVITY) -> float:
    """The highest threshold whose sensitivity (``p >= threshold``) is at least
    ``sensitivity``: the most specific operating point that keeps that sensitivity."""
    positives = np.sort(np.asarray(probabilities)[np.asarray(labels, dtype=bool)])[::-1]
    if positives.size == 0:
        raise ValueError("labels: no positive sample to choose a threshold on")
    needed = math.ceil(sensitivity * positives.size)
    return float(positives[needed - 1])


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int,
                       samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[float]:
    """Percentile 95 % interval of ``statistic(indices)`` over resamples of ``range(n)``;
    resamples where the statistic is undefined (NaN: one class missing) are skipped."""
    generator = np.random.default_rng(seed)
    values = [statistic(generator.integers(0, n, n)) for _ in range(samples)]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return [float("nan"), float("nan")]
    return [round(float(v), 4) for v in np.percentile(values, (2.5, 97.5))]


def operating_figures(labels: np.ndarray, probabilities: np.ndarray,
                      threshold: float, seed: int = 0) -> dict[str, Any]:
    """AUC, sensitivity and specificity at ``threshold``, each with a bootstrap 95 % CI."""
    labels = np.asarray(labels, dtype=bool)
    figures: dict[str, Any] = {"n": int(labels.size), "n_positive": int(labels.sum())}
    statistics = {
        "auc": lambda i: roc_auc(labels[i], probabilities[i]),
        "sensitivity": lambda i: sensitivity_specificity(labels[i], probabilities[i],
                                                         threshold)[0],
        "specificity": lambda i: sensitivity_specificity(labels[i], probabilities[i],
                                                         threshold)[1],
    }
    everything = np.arange(labels.size)
    for name, statistic in statistics.items():
        figures[name] = round(statistic(everything), 4)
        figures[f"{name}_ci95"] = bootstrap_interval(statistic, labels.size, seed=seed)
    return figures


def split_figures(targets: np.ndarray, probabilities: np.ndarray, views: Sequence[str],
                  thresholds: Sequence[float]) -> dict[str, Any]:
    """Per label: figures over all images and within each view (AP, PA), and how far a
    score that only says "PA" gets (the view confound this set is known for)."""
    views = np.asarray(views)
    figures: dict[str, Any] = {}
    for index, label in enumerate(LABELS):
        truth, scores = targets[:, index] > 0.5, probabilities[:, index]
        per_label = {"all": operating_figures(truth, scores, thresholds[index])}
        for view in VIEWS:
            inside = views == view
            if inside.any():
                per_label[view] = operating_figures(truth[inside], scores[inside],
                                                    thresholds[index])
        is_pa = (views == "PA").astype(float)
        per_label["view_only_auc"] = round(roc_auc(truth, is_pa), 4)
        figures[label] = per_label
    return figures


# ------------------------------------------------------------------------- training


@dataclass
class ClassifierTrainConfig:
    epochs: int = 25
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 8
    max_minutes: float = 9.0
    seed: int = 0
    augment: RandomAffineIntensity = field(default_factory=RandomAffineIntensity)


def predict_logits(network: torch.nn.Module, images: torch.Tensor,
                   batch_size: int = 32) -> torch.Tensor:
    network.eval()
    with torch.inference_mode():
        return torch.cat([network(images[i:i + batch_size])
                          for i in range(0, len(images), batch_size)])


def mean_auc(logits: torch.Tensor, data: FindingsTensors) -> float:
    scores = [roc_auc(data.targets[:, c][data.known[:, c] > 0].numpy(),
                      logits[:, c][data.known[:, c] > 0].numpy()) for c in range(len(LABELS))]
    return float(np.nanmean(scores))


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the labels each image actually has."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (loss * known).sum() / known.sum().clamp(min=1)


def train_classifier(network: torch.nn.Module, mode: str, train: FindingsTensors,
                     val: FindingsTensors, config: ClassifierTrainConfig
                     ) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """AdamW + one-cycle; keeps the epoch with the best mean val AUC.

    Stops after ``patience`` epochs without improvement or after ``max_minutes``.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    steps = math.ceil(len(train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps, pct_start=0.15)
    val_inputs = val.inputs(mode)
    best, best_state, since_best, history = -1.0, copy.deepcopy(network.state_dict()), 0, []
    started = time.monotonic()
    for epoch in tqdm(range(config.epochs), desc=f"training {mode}", unit="epoch"):
        train_loss = _train_epoch(network, mode, train, config, optimizer, scheduler, generator)
        logits = predict_logits(network, val_inputs)
        score = mean_auc(logits, val)
        history.append({"epoch": epoch + 1, "train_loss": train_loss,
                        "val_loss": float(masked_bce(logits, val.targets, val.known)),
                        "val_auc_0": score, "minutes": (time.monotonic() - started) / 60})
        log.info("%s epoch %d loss %.4f val AUC %.4f", mode, epoch + 1, train_loss, score)
        if score > best:
            best, best_state, since_best = score, copy.deepcopy(network.state_dict()), 0
        else:
            since_best += 1
        if since_best >= config.patience or history[-1]["minutes"] >= config.max_minutes:
            break
    network.load_state_dict(best_state)
    return network.eval(), history


def _train_epoch(network, mode, train, config, optimizer, scheduler, generator) -> float:
    network.train()
    order = torch.randperm(len(train), generator=generator)
    total, batches = 0.0, 0
    for start in range(0, len(train), config.batch_size):
        index = order[start:start + config.batch_size]
        if len(index) < 2:  # batch norm needs two
            continue
        # The lung mask goes through the same geometry, then re-blanks the background
        # (the intensity jitter would otherwise lift the black outside the lungs).
        images, masks = config.augment(train.images[index], train.masks[index].float(),
                                       generator)
        if mode == LUNG_MASKED:
            images = images * (masks > 0.5)
        loss = masked_bce(network(images), train.targets[index], train.known[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler.last_epoch < scheduler.total_steps - 1:
            scheduler.step()
        total, batches = total + loss.item(), batches + 1
    return total / max(batches, 1)


@dataclass
class TrainedVariant:
    mode: str
    network: torch.nn.Module
    history: list[dict[str, float]]
    val_auc: float
    thresholds: dict[str, float]
    calibration: dict[str, Any]
    test: dict[str, Any]


def calibrate_and_test(mode: str, network: torch.nn.Module, history: list[dict[str, float]],
                       val: FindingsTensors, test: FindingsTensors,
                       test_views: Sequence[str]) -> TrainedVariant:
    """Calibration and thresholds from val; figures on test (same preprocessing)."""
    ece = expected_calibration_error
    val_logits = predict_logits(network, val.inputs(mode)).numpy()
    test_logits = predict_logits(network, test.inputs(mode)).numpy()
    val_truth, test_truth = val.targets.numpy(), test.targets.numpy()
    thresholds, calibration = {}, {}
    probabilities = np.zeros_like(test_logits)
    for c, label in enumerate(LABELS):
        scale, bias = fit_platt(val_logits[:, c], val_truth[:, c])
        after = platt(val_logits[:, c], scale, bias)
        thresholds[label] = round(threshold_for_sensitivity(val_truth[:, c], after), 4)
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
    return TrainedVariant(mode, network, history, mean_auc(torch.from_numpy(val_logits), val),
                          thresholds, calibration, figures)


def train_findings(
    *, data_root: Path, out_dir: Path, command: str, modes: Sequence[str] = INPUT_MODES,
    size: int = 224, config: ClassifierTrainConfig, lung_model: str | Path = "lung_seg",
    dilation: float = 0.03, extra: Sequence[FindingsSample] = (), version: str = "1.0.0",
    eval_dir: Path = Path("runs/findings-train-eval"),
) -> ModelCard:
    """Train one network per input mode, ship the one with the better val AUC.

    The shipped network is then evaluated as the engine runs it (source images, lungs
    from the segmenter) into ``eval_dir``; its heat-map figures go into the card."""
    for mode in modes:
        if mode not in INPUT_MODES:
            raise ValueError(f"modes: unknown {mode!r}; known: {INPUT_MODES}")
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
        network = ModelCard("", "", "", "DenseNet", NETWORK, grid, []).build()
        network, history = train_classifier(network, mode, tensors["train"], tensors["val"],
                                            config)
        variants.append(calibrate_and_test(mode, network, history, tensors["val"],
                                           tensors["test"], [s.view for s in by_split["test"]]))
    chosen = max(variants, key=lambda v: v.val_auc)
    card = _findings_card(chosen, variants, by_split, grid, dilation, command, config,
                          version, minutes=(time.monotonic() - started) / 60,
                          lung_card=segmenter.card.identifier if segmenter else None)
    save_model(chosen.network, card, out_dir)
    plot_curves(chosen.history, ["mean AUC"], out_dir / "training_curves.png", metric="auc")
    evaluation = evaluate_findings(
        FindingsClassifier(chosen.network, card),
        segmenter if chosen.mode == LUNG_MASKED else None, by_split["test"],
        [s for s in samples if s.boxes], eval_dir)
    card.metrics["localisation"] = evaluation["localisation"]
    card.metrics["engine_path_test_auc"] = {
        label: evaluation["figures"][label]["all"]["auc"] for label in LABELS}
    save_model(chosen.network, card, out_dir)
    return card


def _findings_card(chosen: TrainedVariant, variants: Sequence[TrainedVariant],
                   by_split: dict[str, list[FindingsSample]], grid: tuple[int, int],
                   dilation: float, command: str, config: ClassifierTrainConfig,
                   version: str, minutes: float, lung_card: str | None) -> ModelCard:
    return ModelCard(
        name="findings", version=version, task="classification", architecture="DenseNet",
        network_kwargs=NETWORK, input_size=grid, labels=list(LABELS),
        training={
            "command": command, "commit": git_commit(),
            "datasets": [f"../shared/data/{NIH_DATASET} (see its SOURCE.md: NIH ChestX-ray14, "
                         "Wang et al. CVPR 2017; selection Ozturk et al. 2020)"],
            "counts": {k: len(v) for k, v in by_split.items()},
            "labels_from": "NIH Data_Entry 'Finding Labels' (NLP-mined, noisy): abnormal = "
            "anything but 'No Finding'; pneumonia = 'Pneumonia' among the labels. In this set "
            "every abnormal image carries Pneumonia, so the two labels are identical here; "
            "the head is multi-label so other findings/data can separate them later.",
            "lung_model": lung_card, "minutes": round(minutes, 1),
            "torch_threads": torch.get_num_threads(), "seed": config.seed,
            "batch_size": config.batch_size, "learning_rate": config.learning_rate,
            "epochs_max": config.epochs, "patience": config.patience,
            "selection": "epoch with the best mean val AUC; input mode with the best val AUC",
            "pretraining": "not tried (CPU budget); trained from random initialisation",
            "data_not_used": "hannover_covid_cxr (243 COVID-19 CR images, all abnormal, one "
            "hospital): every image positive from one source would let the network learn the "
            "source instead of the finding; nih_cxr14_tiny64 is 64 px (too small).",
            "history": chosen.history,
        },
        metrics={
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
        },
        extra={"input": chosen.mode, "lung_mask_dilation": dilation,
               "calibration": {la: {k: chosen.calibration[la][k] for k in ("scale", "bias")}
                               for la in LABELS},
               "calibration_method": "Platt scaling per label on the val split",
               "thresholds": chosen.thresholds,
               "threshold_rule": f"highest threshold with val sensitivity >= "
               f"{TARGET_SENSITIVITY} (calibrated probabilities)",
               "codes": {la: list(FINDING_CODES[la]) for la in LABELS},
               "heatmap_layer": "class_layers.relu", "heatmap_method": "Grad-CAM (monai)"},
    )


# ------------------------------------------------------------------------ evaluation


@dataclass
class Prediction:
    sample: FindingsSample
    probabilities: np.ndarray
    heatmap: np.ndarray | None
    """Grad-CAM of the ``pneumonia`` label (boxed and montage images only)."""
    pixels: np.ndarray | None


def predict_samples(classifier: FindingsClassifier, segmenter: Segmenter | None,
                    samples: Sequence[FindingsSample],
                    heatmap_for: Callable[[FindingsSample], bool]) -> list[Prediction]:
    """Run the classifier as the engine does (source image, lungs from the segmenter)."""
    label_index = classifier.card.labels.index("pneumonia")
    predictions = []
    for sample in tqdm(samples, desc="predicting", unit="image", leave=False):
        pixels = read_radiograph(sample.image).pixels
        lungs = None
        if classifier.lung_masked:
            masks = segmenter(pixels).masks
            lungs = np.logical_or.reduce([masks[n] for n in LUNG_SEGMENTS])
        network_input = classifier.input(pixels, lungs)
        probabilities = classifier.probabilities(network_input)[0]
        wanted = heatmap_for(sample)
        heatmap = classifier.heatmap(network_input, label_index, pixels.shape) if wanted else None
        predictions.append(Prediction(sample, probabilities, heatmap, pixels if wanted else None))
    return predictions


def box_mask(shape: tuple[int, int], boxes: Sequence[tuple[str, float, float, float, float]]
             ) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for _, x, y, w, h in boxes:
        mask[max(int(y), 0):int(math.ceil(y + h)), max(int(x), 0):int(math.ceil(x + w))] = True
    return mask


def localisation_figures(predictions: Sequence[Prediction]) -> dict[str, Any]:
    """Pointing game (heat-map peak inside an NIH box) and IoU of the map thresholded at
    ``HEATMAP_IOU_LEVEL`` with the union of the boxes."""
    hits, ious = [], []
    for prediction in predictions:
        boxes = box_mask(prediction.heatmap.shape, prediction.sample.boxes)
        hits.append(bool(boxes[peak_location(prediction.heatmap)]))
        hot = prediction.heatmap >= HEATMAP_IOU_LEVEL
        ious.append(float((hot & boxes).sum() / max((hot | boxes).sum(), 1)))
    if not hits:
        return {"n": 0}
    return {"n": len(hits), "pointing_game": round(float(np.mean(hits)), 4),
            "hits": int(sum(hits)), "iou_mean": round(float(np.mean(ious)), 4),
            "iou_median": round(float(np.median(ious)), 4),
            "iou_level": HEATMAP_IOU_LEVEL}


def evaluate_findings(classifier: FindingsClassifier, segmenter: Segmenter | None,
                      samples: Sequence[FindingsSample], boxed: Sequence[FindingsSample],
                      out_dir: Path, split: str = "test") -> dict[str, Any]:
    """Figures on ``samples`` plus pointing game / IoU on ``boxed``; writes
    predictions.csv, roc.png, confusion.png, calibration.png and heatmaps.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = predict_samples(classifier, segmenter, samples, lambda s: bool(s.boxes))
    targets = np.array([[p.sample.labels.get(la, 0.0) for la in LABELS] for p in predictions])
    probabilities = np.stack([p.probabilities for p in predictions])
    thresholds = classifier.thresholds
    _write_predictions(predictions, thresholds, out_dir / "predictions.csv")
    _write_figures(targets, probabilities, [p.sample.view for p in predictions], thresholds,
                   out_dir)
    evaluated = {p.sample.key for p in predictions}
    located = [p for p in predictions if p.heatmap is not None] + predict_samples(
        classifier, segmenter, [s for s in boxed if s.key not in evaluated], lambda s: True)
    _heatmap_montage(located[:8], out_dir / "heatmaps.png")
    splits = sorted({p.sample.split for p in located})
    return {
        "split": split, "figures": split_figures(targets, probabilities,
                                                 [p.sample.view for p in predictions],
                                                 thresholds),
        "ece": {la: round(expected_calibration_error(targets[:, i], probabilities[:, i]), 4)
                for i, la in enumerate(LABELS)},
        "thresholds": dict(zip(LABELS, thresholds, strict=True)),
        "localisation": {
            "heatmap_label": "pneumonia",
            **{f"{s}": localisation_figures([p for p in located if p.sample.split == s])
               for s in splits},
            "val+test": localisation_figures([p for p in located if p.sample.split != "train"]),
            "all": localisation_figures(located),
        },
    }


def _write_predictions(predictions: Sequence[Prediction], thresholds: Sequence[float],
                       path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "split", "view"] + [f"label_{la}" for la in LABELS]
                        + [f"probability_{la}" for la in LABELS]
                        + [f"positive_{la}" for la in LABELS])
        for p in predictions:
            writer.writerow(
                [p.sample.image.name, p.sample.split, p.sample.view]
                + [int(p.sample.labels.get(la, -1)) for la in LABELS]
                + [f"{v:.4f}" for v in p.probabilities]
                + [int(v >= t) for v, t in zip(p.probabilities, thresholds, strict=True)])


def _write_figures(targets: np.ndarray, probabilities: np.ndarray, views: Sequence[str],
                   thresholds: Sequence[float], out_dir: Path) -> None:
    views = np.asarray(views)
    curves, matrices, reliability = {}, {}, {}
    for i, label in enumerate(LABELS):
        truth = targets[:, i] > 0.5
        for group in ("all", *VIEWS):
            inside = np.ones_like(truth) if group == "all" else views == group
            fpr, tpr = roc_curve(truth[inside], probabilities[inside, i])
            curves[f"{label} {group}"] = (fpr, tpr, roc_auc(truth[inside],
                                                            probabilities[inside, i]))
        called = probabilities[:, i] >= thresholds[i]
        matrices[label] = np.array([[np.sum(~truth & ~called), np.sum(~truth & called)],
                                    [np.sum(truth & ~called), np.sum(truth & called)]])
        reliability[label] = reliability_bins(targets[:, i], probabilities[:, i])
    plot_roc(curves, out_dir / "roc.png")
    plot_confusion(matrices, out_dir / "confusion.png")
    plot_calibration(reliability, out_dir / "calibration.png")


def _heatmap_montage(predictions: Sequence[Prediction], path: Path) -> None:
    """Image and Grad-CAM overlay with the NIH boxes outlined in green."""
    if not predictions:
        return
    rows, labels = [], []
    for p in predictions:
        boxes = box_mask(p.pixels.shape, p.sample.boxes)
        rgb = heatmap_rgb(p.pixels, p.heatmap)
        rgb[boxes & ~ndimage.binary_erosion(boxes, iterations=2)] = (0, 255, 0)
        rows.append([p.pixels, rgb])
        probability = p.probabilities[LABELS.index("pneumonia")]
        labels.append(f"{p.sample.key} ({p.sample.split}) p={probability:.2f}")
    save_montage(rows, ["image", "Grad-CAM pneumonia + NIH box"], path, labels)
