"""CPU or GPU for the engine's networks: which devices this machine offers, and putting
the engine on one (the engine moves every stage's network itself)."""

from __future__ import annotations

import torch

import cxr_core

CPU = "cpu"
CUDA = "cuda"


def available_devices() -> list[str]:
    """``["cpu"]``, plus ``"cuda"`` when torch sees a CUDA GPU."""
    return [CPU, CUDA] if torch.cuda.is_available() else [CPU]


def check_device(device: str) -> str:
    """``device`` if this machine offers it.

    Raises
    ------
    ValueError
        If ``device`` is not one of :func:`available_devices`.
    """
    if device not in available_devices():
        raise ValueError(f"device: {device!r} is not available here "
                         f"(available: {', '.join(available_devices())})")
    return device


def place_engine(engine: cxr_core.Engine, device: str) -> None:
    """Run every network of ``engine`` on ``device`` (after checking it is available)."""
    engine.to(check_device(device))
