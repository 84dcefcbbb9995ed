"""MONAI networks named in model cards (no torchvision / timm: they do not run here).

Training builds MONAI's classes (:func:`build_network`); inference builds their
plain-PyTorch twins where one exists (:func:`build_inference_network`,
:mod:`cxr_core.models.plain_nets`), so analysing an image never imports MONAI.
"""

from __future__ import annotations

from typing import Any

import torch

ARCHITECTURES = ("UNet", "BasicUNet", "DenseNet121", "DenseNet", "EfficientNetBN")
"""The ``monai.networks.nets`` classes a card may name."""


def build_network(architecture: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    """Instantiate ``monai.networks.nets.<architecture>(**kwargs)``."""
    if architecture not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"architecture: unknown {architecture!r}; known: {known}")
    from monai.networks import nets  # imports all of MONAI: only when training needs it

    network_class: type[torch.nn.Module] = getattr(nets, architecture)
    return network_class(**kwargs)


def build_inference_network(architecture: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    """The network to load weights into for inference: the plain-PyTorch twin of the MONAI
    class (same layer names, same outputs) when there is one, else MONAI's."""
    from cxr_core.models.plain_nets import plain_network

    if architecture not in ARCHITECTURES:
        return build_network(architecture, kwargs)  # its error
    return plain_network(architecture, kwargs) or build_network(architecture, kwargs)


def network_device(network: torch.nn.Module) -> torch.device:
    """Where a network's parameters are (its inputs must go there)."""
    return next(network.parameters()).device
