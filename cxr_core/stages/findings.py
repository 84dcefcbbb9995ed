"""Image-level findings (abnormal and the NIH labels the card ships): calibrated
probabilities, operating thresholds and heat maps (class activation maps), as an engine
stage.

The model card's ``runtime.classifier`` says how to run the network: ``input``
(``whole_image`` or ``lung_masked``), ``lung_mask_dilation``, per-label ``calibration``
(Platt scale and bias), ``thresholds`` (operating points chosen on the val split) and
``heatmap_layer``. Each label's code comes from :mod:`cxr_core.terminology`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxr_core.analysis import Analysis, Finding
from cxr_core.explain import ClassActivationMaps
from cxr_core.flags import QualityFlag
from cxr_core.measure import lung_union
from cxr_core.models import ClassifierRules, ModelCard, load_model
from cxr_core.models.card import CLASSIFIER_INPUTS
from cxr_core.models.networks import network_device
from cxr_core.preprocess import PERCENTILE, PERCENTILES, ToModelInput
from cxr_core.terminology import finding_code
from cxr_core.zones import finding_zones

FINDINGS_MODEL = "findings"
WHOLE_IMAGE = "whole_image"
LUNG_MASKED = "lung_masked"
INPUT_MODES = CLASSIFIER_INPUTS
DEFAULT_DILATION = ClassifierRules().lung_mask_dilation


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
                 dilation: float = DEFAULT_DILATION,
                 percentiles: tuple[float, float] = PERCENTILES,
                 normalization: str = PERCENTILE) -> None:
        if mode not in INPUT_MODES:
            raise ValueError(f"mode: expected one of {INPUT_MODES}, got {mode!r}")
        if not 0 <= dilation < 0.5:
            raise ValueError(f"dilation: expected a fraction in [0, 0.5), got {dilation}")
        self.to_input = ToModelInput(size, percentiles, normalization)
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
            # a square max filter is a column filter then a row filter: the same mask,
            # 4x faster than the square one at a 7-pixel radius
            side = 2 * self.radius + 1
            mask = F.max_pool2d(mask, (side, 1), stride=1, padding=(self.radius, 0))
            mask = F.max_pool2d(mask, (1, side), stride=1, padding=(0, self.radius))
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
        rules = card.runtime.classifier or ClassifierRules()
        normalization = card.network.normalization
        self.input = FindingsInput(card.input_size, rules.input, rules.lung_mask_dilation,
                                   normalization.percentiles, normalization.method)
        calibration = [rules.calibration.get(label) for label in card.labels]
        self.scale = torch.tensor([c.scale if c else 1.0 for c in calibration])
        self.bias = torch.tensor([c.bias if c else 0.0 for c in calibration])
        self.thresholds = [rules.thresholds.get(label, 0.5) for label in card.labels]
        try:
            self.codes = {label: finding_code(label) for label in card.labels}
        except ValueError as error:
            raise ValueError(f"card: model {card.name}: {error}") from None
        self.heatmap = ClassActivationMaps(self.network, rules.heatmap_layer)

    @classmethod
    def load(cls, name_or_dir: str | Path = FINDINGS_MODEL, *,
             device: str | torch.device = "cpu") -> FindingsClassifier:
        return cls(*load_model(name_or_dir, device=device))

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
            logits = self.network(network_input.to(network_device(self.network))).cpu()
        return self.calibrate(logits).numpy()

    def __call__(self, pixels: np.ndarray, lungs: np.ndarray | None = None, *,
                 mirrored: bool = False, heatmaps: bool = True) -> list[Finding]:
        """One :class:`Finding` per label; heat maps (class activation maps, read off the
        same forward pass) for the positive ones.

        ``mirrored`` images (patient-right on image-right) are flipped into radiological
        display for the network, as in training, and their heat maps flipped back.
        """
        if mirrored:
            pixels = pixels[:, ::-1]
            lungs = None if lungs is None else lungs[:, ::-1]
        forward = self.heatmap.forward(self.input(pixels, lungs))
        probabilities = self.calibrate(forward.logits[None]).numpy()[0]
        positive = [float(p) >= t for p, t in zip(probabilities, self.thresholds, strict=True)]
        # lazy maps, all from one product on the feature map: made at source resolution
        # only if an output asks for them
        wanted = [i for i, is_positive in enumerate(positive) if is_positive and heatmaps]
        maps = dict(zip(wanted, self.heatmap.maps(forward, wanted, pixels.shape,
                                                  mirrored=mirrored), strict=True))
        return [Finding(name=label, code=self.codes[label],
                        probability=float(probabilities[index]),
                        threshold=self.thresholds[index], positive=positive[index],
                        heatmap=maps.get(index), model_id=self.card.identifier)
                for index, label in enumerate(self.card.labels)]


class FindingsStage:
    """Engine stage: classify the radiograph (lung-masked with the engine's lungs when the
    model was trained that way) and add one finding per label.

    Parameters
    ----------
    classifier:
        The classifier with its card's rules.
    """

    name = "findings"

    def __init__(self, classifier: FindingsClassifier) -> None:
        self.classifier = classifier
        self.card = classifier.card

    @classmethod
    def load(cls, models_dir: Path, *, device: str | torch.device = "cpu") -> FindingsStage:
        """Load ``<models_dir>/findings``."""
        return cls(FindingsClassifier.load(Path(models_dir) / FINDINGS_MODEL, device=device))

    @property
    def networks(self) -> Sequence[torch.nn.Module]:
        return [self.classifier.network]

    def run(self, analysis: Analysis) -> None:
        lungs = None
        if self.classifier.lung_masked:
            lungs = lung_union({name: s.mask for name, s in analysis.segments.items()})
            if lungs is None or not lungs.any():
                # No lungs to mask with: the whole image is a better guess than a black one.
                analysis.flag(QualityFlag.FINDINGS_WITHOUT_LUNG_MASK)
                lungs = np.ones(analysis.radiograph.shape, dtype=bool)
        findings = self.classifier(
            analysis.radiograph.pixels, lungs, mirrored=analysis.radiograph.mirrored)
        add_zones(findings, analysis)
        analysis.findings.extend(findings)


def add_zones(findings: Sequence[Finding], analysis: Analysis) -> None:
    """Fill each positive finding's lung zones from its heat map and the analysis' lung
    segments (:mod:`cxr_core.zones`); a finding without a map or lungs gets none."""
    lungs = {name: segment.mask for name, segment in analysis.segments.items()}
    for finding in findings:
        if finding.positive and finding.heat is not None:
            finding.zones = finding_zones(finding.heat, lungs)
