"""Image-level findings (abnormal, pneumonia): calibrated probabilities, operating
thresholds and Grad-CAM heat maps, as an engine stage.

The model card's ``extra`` says how to run the network: ``input`` (``whole_image`` or
``lung_masked``), ``lung_mask_dilation``, per-label ``calibration`` (Platt scale and bias),
``thresholds`` (operating points chosen on the val split), ``codes`` and ``heatmap_layer``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxr_core.analysis import Analysis, Finding
from cxr_core.explain import DENSENET_TARGET_LAYER, GradCamHeatmap
from cxr_core.models import ModelCard, load_model
from cxr_core.preprocess import ToModelInput

FINDINGS_MODEL = "findings"
WHOLE_IMAGE = "whole_image"
LUNG_MASKED = "lung_masked"
INPUT_MODES = (WHOLE_IMAGE, LUNG_MASKED)
DEFAULT_DILATION = 0.03
FINDING_CODES: dict[str, tuple[str, str, str]] = {
    "abnormal": ("263654008", "SCT", "Abnormal"),
    "pneumonia": ("233604007", "SCT", "Pneumonia"),
}
LUNG_SEGMENTS = ("right_lung", "left_lung")
FINDINGS_WITHOUT_LUNGS = "findings_without_lung_mask"
"""Quality flag: a lung-masked model ran on the whole image because no lung was found."""


class FindingsInput:
    """Radiograph pixels (and lungs) -> the classifier's ``(1, 1, h, w)`` input.

    Parameters
    ----------
    size:
        Network input ``(rows, columns)``.
    mode:
        ``whole_image``, or ``lung_masked``: zero everything outside the lungs, dilated by
        ``dilation`` of the input size so the lung edges (and costophrenic angles) stay in.
    dilation:
        Dilation radius as a fraction of the input's larger side.
    """

    def __init__(self, size: tuple[int, int], mode: str = WHOLE_IMAGE,
                 dilation: float = DEFAULT_DILATION) -> None:
        if mode not in INPUT_MODES:
            raise ValueError(f"mode: expected one of {INPUT_MODES}, got {mode!r}")
        if not 0 <= dilation < 0.5:
            raise ValueError(f"dilation: expected a fraction in [0, 0.5), got {dilation}")
        self.to_input = ToModelInput(size)
        self.mode = mode
        self.radius = round(dilation * max(size))

    def __call__(self, pixels: np.ndarray, lungs: np.ndarray | None = None) -> torch.Tensor:
        """``lungs`` (bool, same shape as ``pixels``) is required in ``lung_masked`` mode."""
        network_input = self.to_input(pixels)
        if self.mode == WHOLE_IMAGE:
            return network_input
        if lungs is None or lungs.shape != pixels.shape:
            raise ValueError("lungs: a lung-masked model needs a lung mask shaped like the "
                             f"image {pixels.shape}, got "
                             f"{None if lungs is None else lungs.shape}")
        return network_input * self.network_mask(lungs)

    def network_mask(self, lungs: np.ndarray) -> torch.Tensor:
        """The dilated lung mask on the network grid, ``(1, 1, h, w)`` float 0/1."""
        mask = torch.from_numpy(np.ascontiguousarray(lungs, dtype=np.float32))[None, None]
        mask = (F.interpolate(mask, size=self.to_input.size, mode="area") > 0).float()
        if self.radius:
            mask = F.max_pool2d(mask, 2 * self.radius + 1, stride=1, padding=self.radius)
        return mask


class FindingsClassifier:
    """A multi-label classifier with its card's input mode, calibration and thresholds.

    Parameters
    ----------
    network, card:
        As returned by :func:`cxr_core.models.load_model`.
    """

    def __init__(self, network: torch.nn.Module, card: ModelCard) -> None:
        self.network = network.eval()
        self.card = card
        extra = card.extra
        self.input = FindingsInput(card.input_size, extra.get("input", WHOLE_IMAGE),
                                   float(extra.get("lung_mask_dilation", DEFAULT_DILATION)))
        calibration = extra.get("calibration", {})
        self.scale = torch.tensor([float(calibration.get(label, {}).get("scale", 1.0))
                                   for label in card.labels])
        self.bias = torch.tensor([float(calibration.get(label, {}).get("bias", 0.0))
                                  for label in card.labels])
        thresholds = extra.get("thresholds", {})
        self.thresholds = [float(thresholds.get(label, 0.5)) for label in card.labels]
        codes = extra.get("codes", FINDING_CODES)
        missing = [label for label in card.labels if label not in codes]
        if missing:
            raise ValueError(f"card: model {card.name} has no code for labels {missing}")
        self.codes = {label: tuple(codes[label]) for label in card.labels}
        self.heatmap = GradCamHeatmap(self.network, extra.get("heatmap_layer",
                                                              DENSENET_TARGET_LAYER))

    @classmethod
    def load(cls, name_or_dir: str | Path = FINDINGS_MODEL) -> FindingsClassifier:
        return cls(*load_model(name_or_dir))

    @property
    def lung_masked(self) -> bool:
        return self.input.mode == LUNG_MASKED

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities ``sigmoid(scale * logit + bias)`` of ``(N, labels)``
        logits (Platt scaling fitted on the val split; scale > 0 keeps the ranking)."""
        return torch.sigmoid(logits * self.scale + self.bias)

    def probabilities(self, network_input: torch.Tensor) -> np.ndarray:
        """Calibrated ``(N, labels)`` probabilities of a batch of network inputs."""
        with torch.inference_mode():
            return self.calibrate(self.network(network_input)).numpy()

    def __call__(self, pixels: np.ndarray, lungs: np.ndarray | None = None, *,
                 mirrored: bool = False, heatmaps: bool = True) -> list[Finding]:
        """One :class:`Finding` per label; Grad-CAM heat maps for the positive ones.

        ``mirrored`` images (patient-right on image-right) are flipped into radiological
        display for the network, as in training, and their heat maps flipped back.
        """
        if mirrored:
            pixels = pixels[:, ::-1]
            lungs = None if lungs is None else lungs[:, ::-1]
        network_input = self.input(pixels, lungs)
        probabilities = self.probabilities(network_input)[0]
        findings = []
        for index, label in enumerate(self.card.labels):
            probability = float(probabilities[index])
            positive = probability >= self.thresholds[index]
            heatmap = None
            if positive and heatmaps:
                heatmap = self.heatmap(network_input, index, pixels.shape)
                heatmap = np.ascontiguousarray(heatmap[:, ::-1]) if mirrored else heatmap
            findings.append(Finding(name=label, code=self.codes[label], probability=probability,
                                    threshold=self.thresholds[index], positive=positive,
                                    heatmap=heatmap, model_id=self.card.identifier))
        return findings


class FindingsStage:
    """Engine stage: classify the radiograph (lung-masked with the engine's lungs when the
    model was trained that way) and add one finding per label.

    Parameters
    ----------
    models_dir:
        Folder holding ``findings/`` (weights and card).
    """

    name = "findings"

    def __init__(self, models_dir: Path) -> None:
        self.classifier = FindingsClassifier.load(Path(models_dir) / FINDINGS_MODEL)
        self.card = self.classifier.card

    def run(self, analysis: Analysis) -> None:
        lungs = None
        if self.classifier.lung_masked:
            lungs = lung_union(analysis)
            if lungs is None:
                # No lungs to mask with: the whole image is a better guess than a black one.
                analysis.quality_flags.append(FINDINGS_WITHOUT_LUNGS)
                lungs = np.ones(analysis.radiograph.shape, dtype=bool)
        analysis.findings.extend(self.classifier(
            analysis.radiograph.pixels, lungs,
            mirrored="mirrored_orientation" in analysis.quality_flags))


def lung_union(analysis: Analysis) -> np.ndarray | None:
    """Both lungs as one mask at source resolution, or None when no lung pixel was found."""
    masks = [analysis.segments[name].mask for name in LUNG_SEGMENTS if name in analysis.segments]
    if not masks:
        return None
    union = np.logical_or.reduce(masks)
    return union if union.any() else None
