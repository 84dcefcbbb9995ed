"""Where a classifier looked: Grad-CAM heat maps at the radiograph's source resolution."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM

from cxr_core.models.networks import network_device

# MONAI's DenseNet ends features -> class_layers.relu -> pool: the last spatial activation.
DENSENET_TARGET_LAYER = "class_layers.relu"


class GradCamHeatmap:
    """Grad-CAM of one output channel, resized to the source image, scaled 0..1.

    Parameters
    ----------
    network:
        The classifier (in eval mode); MONAI registers its hooks on it once, here.
    target_layer:
        Dotted name of the layer whose activations and gradients make the map.
    """

    def __init__(self, network: torch.nn.Module,
                 target_layer: str = DENSENET_TARGET_LAYER) -> None:
        names = {name for name, _ in network.named_modules()}
        if target_layer not in names:
            raise ValueError(f"target_layer: {target_layer!r} is not a layer of the network")
        self.network = network
        self.cam = GradCAM(nn_module=network, target_layers=target_layer)

    def __call__(self, network_input: torch.Tensor, class_index: int,
                 shape: tuple[int, int]) -> np.ndarray:
        """Heat map of ``class_index`` for a ``(1, 1, h, w)`` input, as ``shape`` float32.

        The map is bilinearly resized from the network grid; each map is scaled to 0..1 on
        its own, so it says *where* the model looked, not *how much* (the probability does).
        """
        if network_input.ndim != 4 or network_input.shape[0] != 1:
            raise ValueError(f"network_input: expected shape (1, 1, h, w), got "
                             f"{tuple(network_input.shape)}")
        # Grad-CAM needs gradients, even when the caller runs under inference mode.
        on_device = network_input.to(network_device(self.network))
        with torch.inference_mode(False), torch.enable_grad():
            raw = self.cam(on_device.clone(), class_idx=class_index)
        full = F.interpolate(raw.detach().float().cpu(), size=shape, mode="bilinear",
                             align_corners=False)[0, 0]
        low, high = float(full.min()), float(full.max())
        return ((full - low) / max(high - low, 1e-8)).numpy().astype(np.float32)
