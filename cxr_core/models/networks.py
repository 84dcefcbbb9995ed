"""MONAI networks named in model cards (no torchvision / timm: they do not run here)."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks import nets

ARCHITECTURES: dict[str, type[torch.nn.Module]] = {
    "UNet": nets.UNet,
    "BasicUNet": nets.BasicUNet,
    "DenseNet121": nets.DenseNet121,
    "DenseNet": nets.DenseNet,
    "EfficientNetBN": nets.EfficientNetBN,
}


def build_network(architecture: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    """Instantiate ``monai.networks.nets.<architecture>(**kwargs)``."""
    try:
        network_class = ARCHITECTURES[architecture]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"architecture: unknown {architecture!r}; known: {known}") from None
    return network_class(**kwargs)


def network_device(network: torch.nn.Module) -> torch.device:
    """Where a network's parameters are (its inputs must go there)."""
    return next(network.parameters()).device
