"""CPU or GPU for the engine's networks.

The engine loads every network on the CPU and builds its input tensors there. To run on
a GPU without changing the engine, each segmentation network is wrapped so it moves its
input to the device and its output back. Classifiers stay on the CPU: their Grad-CAM
hooks hold the network itself (an ``Engine(device=...)`` in cxr_core would lift this).
"""

from __future__ import annotations

from typing import Any

import torch

from cxr_core.segmentation import Segmenter

CPU = "cpu"
CUDA = "cuda"


def available_devices() -> list[str]:
    """``["cpu"]``, plus ``"cuda"`` when torch sees a CUDA GPU."""
    return [CPU, CUDA] if torch.cuda.is_available() else [CPU]


class OnDevice(torch.nn.Module):
    """Run ``network`` on ``device`` for CPU callers."""

    def __init__(self, network: torch.nn.Module, device: str) -> None:
        super().__init__()
        self.network = network.to(device)
        self.device = device

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs.to(self.device)).to(CPU)


def place_engine(engine: Any, device: str) -> None:
    """Move the segmentation networks of ``engine`` (the lung segmenter and any stage's
    ``segmenter``) to ``device``.

    Raises
    ------
    ValueError
        If ``device`` is not one of :func:`available_devices`.
    """
    if device not in available_devices():
        raise ValueError(f"device: {device!r} is not available here "
                         f"(available: {', '.join(available_devices())})")
    holders = [engine.lung] + [getattr(stage, "segmenter", None) for stage in engine.stages]
    for holder in holders:
        if not isinstance(holder, Segmenter):
            continue
        network = holder.network
        inner = network.network if isinstance(network, OnDevice) else network
        holder.network = inner.to(CPU).eval() if device == CPU else OnDevice(inner, device).eval()
