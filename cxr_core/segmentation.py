"""Run a segmentation model on a radiograph and return masks at source resolution."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from cxr_core.mask_quality import mask_agreement
from cxr_core.models import ModelCard, PostProcess, load_model
from cxr_core.models.networks import network_device
from cxr_core.preprocess import ToModelInput, resize_probabilities

THRESHOLD = 0.5
LARGEST_COMPONENT = "largest_component"
MIN_COMPONENT = "min_component"


@dataclass
class SegmentationOutput:
    masks: dict[str, np.ndarray]
    """Boolean masks at source resolution, by structure name."""
    probabilities: torch.Tensor
    """``(C, rows, columns)`` sigmoid outputs at the model's input size."""
    uncertainty: float
    """Pixels with probability in (0.1, 0.9) per foreground pixel: how unsure the model is
    about where its structures end (low on images like those it was trained on)."""
    agreement: dict[str, float] = field(default_factory=dict)
    """Per structure, how far to trust its mask (:func:`cxr_core.mask_quality.mask_agreement`)."""


class Segmenter:
    """A segmentation network with its card's pre- and post-processing.

    Post-processing, per the card's ``runtime.postprocess``: ``largest_component`` keeps
    one connected component per structure (lungs, heart); ``min_component`` drops
    components smaller than ``min_component_fraction`` of the image (lesions).
    Left/right lung overlaps go to the more probable side. The network may sit on any
    device; inputs go to it and probabilities come back to the CPU.
    """

    def __init__(self, network: torch.nn.Module, card: ModelCard) -> None:
        self.network = network.eval()
        self.card = card
        self.to_input = ToModelInput(card.input_size, card.network.normalization.percentiles,
                                     card.network.normalization.method)
        rule = card.runtime.postprocess or PostProcess()
        self.postprocess: str = rule.method
        self.min_fraction = rule.min_component_fraction

    @classmethod
    def load(cls, name_or_dir: str | Path, *, device: str | torch.device = "cpu") -> Segmenter:
        return cls(*load_model(name_or_dir, device=device))

    def to(self, device: str | torch.device) -> Segmenter:
        """Move the network to ``device``."""
        self.network.to(device)
        return self

    def probabilities(self, pixels: np.ndarray) -> torch.Tensor:
        """Sigmoid outputs ``(C, rows, columns)`` at the model's input size, on the CPU."""
        network_input = self.to_input(pixels).to(network_device(self.network))
        with torch.inference_mode():
            return torch.sigmoid(self.network(network_input))[0].cpu()

    def __call__(self, pixels: np.ndarray, *, mirrored: bool = False) -> SegmentationOutput:
        """Segment ``pixels``; ``mirrored`` images (patient-right on image-right) are
        flipped into radiological display for the model and the masks flipped back."""
        view = pixels[:, ::-1] if mirrored else pixels
        probabilities = self.probabilities(view)
        cleaned = self._clean(probabilities)
        masks = {}
        for index, name in enumerate(self.card.labels):
            # one channel at a time: a 2k image's three float maps held at once were the
            # analysis' peak memory; each channel is resized alone, to the same values
            full = resize_probabilities(cleaned[None, index:index + 1], view.shape)[0, 0]
            mask = full.numpy() > THRESHOLD
            masks[name] = np.ascontiguousarray(mask[:, ::-1]) if mirrored else mask
        agreement = dict(zip(self.card.labels, mask_agreement(probabilities), strict=True))
        return SegmentationOutput(masks, probabilities, _uncertainty(probabilities), agreement)

    def _clean(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Zero the probabilities outside the kept components (at model resolution)."""
        cleaned = probabilities.clone()
        values = cleaned.numpy()  # the same memory: numpy's masked writes are faster here
        below = np.float32(THRESHOLD - 1e-3)
        labels = self.card.labels
        if "right_lung" in labels and "left_lung" in labels:
            right, left = values[labels.index("right_lung")], values[labels.index("left_lung")]
            right_wins = right >= left
            left[right_wins] = np.minimum(left[right_wins], below)
            right[~right_wins] = np.minimum(right[~right_wins], below)
        for channel in values:
            keep = self._components_to_keep(channel > THRESHOLD)
            if self.postprocess == LARGEST_COMPONENT:
                # organs have no holes: a dense opacity inside a lung is still lung
                holes = _holes(keep)
                channel[holes] = 1.0
                keep |= holes
            # a one-pixel margin so the bilinear upsampling keeps a smooth edge
            keep = ndimage.binary_dilation(keep, iterations=1)
            channel[~keep] = 0.0
        return cleaned

    def _components_to_keep(self, mask: np.ndarray) -> np.ndarray:
        labels, count = ndimage.label(mask)
        if count == 0:
            return mask
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
        if self.postprocess == LARGEST_COMPONENT:
            return np.asarray(labels == (int(np.argmax(sizes)) + 1))
        keep_ids = np.nonzero(sizes >= self.min_fraction * mask.size)[0] + 1
        return np.isin(labels, keep_ids)


def _holes(mask: np.ndarray) -> np.ndarray:
    """Background pixels enclosed by ``mask``: the 4-connected background components that
    touch no image edge (what ``ndimage.binary_fill_holes`` adds, labelled once instead of
    dilated from the border until nothing changes)."""
    labels, _ = ndimage.label(~mask)
    enclosed = np.ones(int(labels.max()) + 1, dtype=bool)
    enclosed[0] = False  # the mask itself
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        enclosed[edge] = False
    return np.asarray(enclosed[labels])


def _uncertainty(probabilities: torch.Tensor) -> float:
    unsure = ((probabilities > 0.1) & (probabilities < 0.9)).sum()
    foreground = (probabilities > THRESHOLD).sum().clamp(min=1)
    return float(unsure / foreground)
