"""Where a classifier looked: class activation maps at the radiograph's source resolution.

Our classifiers end ``features -> ReLU -> global average pool -> linear``. For such a head
Grad-CAM's channel weights (the spatial mean of the class score's gradient) are the linear
layer's weights divided by the map's area, so Grad-CAM equals the class activation map
``ReLU(sum_k w_ck A_k)`` up to scale. The map is therefore read off the forward pass that
computes the probabilities: every label's map costs one weighted sum, no backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cxr_core.models.networks import network_device

# MONAI's DenseNet ends features -> class_layers.relu -> pool -> flatten -> out.
DENSENET_TARGET_LAYER = "class_layers.relu"
DENSENET_OUTPUT_LAYER = "class_layers.out"


@dataclass(frozen=True)
class Forward:
    """One forward pass: the logits ``(labels,)`` and the target layer's activations
    ``(channels, h, w)``, both on the CPU."""

    logits: torch.Tensor
    activations: torch.Tensor


class ClassActivationMaps:
    """Logits and per-label heat maps of a GAP + linear classifier from one forward pass.

    Parameters
    ----------
    network:
        The classifier (in eval mode).
    target_layer:
        Dotted name of the last spatial activation (before the global average pool).
    output_layer:
        Dotted name of the final ``torch.nn.Linear`` whose weights make the maps.
    """

    def __init__(self, network: torch.nn.Module, target_layer: str = DENSENET_TARGET_LAYER,
                 output_layer: str = DENSENET_OUTPUT_LAYER) -> None:
        modules = dict(network.named_modules())
        if target_layer not in modules:
            raise ValueError(f"target_layer: {target_layer!r} is not a layer of the network")
        output = modules.get(output_layer)
        if not isinstance(output, torch.nn.Linear):
            raise ValueError(f"output_layer: {output_layer!r} is not a linear layer of the "
                             "network (class activation maps need a GAP + linear head)")
        self.network = network
        self.layer = modules[target_layer]
        self.weights = output.weight

    def forward(self, network_input: torch.Tensor) -> Forward:
        """Logits and activations of a ``(1, 1, h, w)`` input."""
        if network_input.ndim != 4 or network_input.shape[0] != 1:
            raise ValueError(f"network_input: expected shape (1, 1, h, w), got "
                             f"{tuple(network_input.shape)}")
        captured: list[torch.Tensor] = []
        handle = self.layer.register_forward_hook(
            lambda _module, _inputs, output: captured.append(output))
        try:
            with torch.inference_mode():
                logits = self.network(network_input.to(network_device(self.network)))
        finally:
            handle.remove()
        return Forward(logits[0].float().cpu(), captured[0][0].float().cpu())

    def heatmap(self, forward: Forward, class_index: int, shape: tuple[int, int]) -> np.ndarray:
        """The map of ``class_index`` resized to ``shape``, float32 scaled 0..1 on its own
        (it says *where* the model looked, not *how much*: the probability does)."""
        with torch.inference_mode():
            weights = self.weights[class_index].detach().float().cpu()
            cam = torch.relu(torch.einsum("k,khw->hw", weights, forward.activations))
            full = F.interpolate(cam[None, None], size=shape, mode="bilinear",
                                 align_corners=False)[0, 0]
        low, high = float(full.min()), float(full.max())
        return ((full - low) / max(high - low, 1e-8)).numpy().astype(np.float32)

    def __call__(self, network_input: torch.Tensor, class_index: int,
                 shape: tuple[int, int]) -> np.ndarray:
        """The map of ``class_index`` for a ``(1, 1, h, w)`` input (one forward pass)."""
        return self.heatmap(self.forward(network_input), class_index, shape)
