"""``cxr evaluate gate``: how often the gate refuses what it should and what it should not.

On the test split (and on the sources never trained on):

* per source, the share of images refused, with a Wilson 95 % interval: for frontal
  chests that is the false-refusal rate, for everything else the refusal rate;
* on frontal test chests turned and mirrored on purpose (each in all eight orientations):
  how often a turn is refused as such, a mirror is detected, and an upright image is
  wrongly turned or mirrored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cxr_core.stages.gate import ChestGate, GateReading
from cxr_core.training.gate_data import FRONTAL, ROTATIONS, UNSEEN_SOURCES, GateSample, conditioned
from cxr_core.training.metrics import wilson


def orientation_variant(key: str) -> tuple[int, bool]:
    """A fixed orientation (quarter turns, mirrored) for a sample's validation copy."""
    value = int(hashlib.sha256(f"orient:{key}".encode()).hexdigest()[:4], 16) % 8
    return value % 4, value >= 4


def rate(hits: int, n: int) -> dict[str, Any]:
    return {"n": n, "count": hits, "rate": round(hits / n, 4) if n else None,
            "ci95": wilson(hits, n)}


def evaluate_gate(gate: ChestGate, samples: Sequence[GateSample], out_dir: Path,
                  batch_size: int = 64) -> dict[str, Any]:
    """Refusal rates per source and orientation detection, on ``samples`` (test split)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = torch.cat([gate.to_input(conditioned(s.load())) for s in tqdm(
        samples, desc="gate test", unit="image", leave=False)])
    readings = _read(gate, inputs, batch_size)
    refused = [gate.refusal(r) is not None for r in readings]
    by_source: dict[str, list[bool]] = {}
    for sample, was_refused in zip(samples, refused, strict=True):
        by_source.setdefault(sample.source, []).append(was_refused)
    contents = {s.source: s.content for s in samples}
    frontal = [i for i, s in enumerate(samples) if s.content == FRONTAL]
    unseen = [r for s, r in zip(samples, refused, strict=True) if s.source in UNSEEN_SOURCES]
    not_frontal = [r for s, r in zip(samples, refused, strict=True) if s.content != FRONTAL]
    return {
        "split": "test",
        "rules": {"frontal_min": gate.rules.frontal_min,
                  "rotation_min": gate.rules.rotation_min,
                  "mirrored_min": gate.rules.mirrored_min},
        "false_refusal_frontal_chests": rate(sum(refused[i] for i in frontal), len(frontal)),
        "refusal_not_frontal": rate(sum(not_frontal), len(not_frontal)),
        "refusal_unseen_sources": rate(sum(unseen), len(unseen)),
        "per_source": {source: rate(sum(hits), len(hits)) | {
            "content": contents[source], "trained_on_source": source not in UNSEEN_SOURCES}
            for source, hits in sorted(by_source.items())},
        "orientation": orientation_figures(gate, inputs[frontal], batch_size),
    }


def orientation_figures(gate: ChestGate, frontal: torch.Tensor,
                        batch_size: int = 64) -> dict[str, Any]:
    """Each frontal chest in all eight orientations: is a turn refused, a mirror found?"""
    figures: dict[str, Any] = {}
    for turns in range(4):
        for mirrored in (False, True):
            images = frontal.flip(-1) if mirrored else frontal
            images = torch.rot90(images, turns, dims=(-2, -1))
            readings = _read(gate, images, batch_size)
            name = f"turned_{ROTATIONS[turns]}" + ("_mirrored" if mirrored else "")
            turned = [r.rotation != 0 and r.rotation_probability >= gate.rules.rotation_min
                      for r in readings]
            found_mirror = [gate.mirrored(r) for r in readings]
            uncertain = [gate.sides(r, header_mirrored=False) is None for r in readings]
            refused = [gate.refusal(r) is not None for r in readings]
            figures[name] = {
                "refused": rate(sum(refused), len(refused)),
                "turn_detected": rate(sum(turned), len(turned)),
                "turn_right": rate(sum(r.rotation == ROTATIONS[turns] for r in readings),
                                   len(readings)),
                "mirror_detected": rate(sum(found_mirror), len(found_mirror)),
                "sides_uncertain": rate(sum(uncertain), len(uncertain)),
            }
    upright = figures["turned_0"]
    figures["summary"] = {
        "upright_wrongly_turned": upright["turn_detected"],
        "upright_wrongly_mirrored": upright["mirror_detected"],
        "upright_sides_uncertain": upright["sides_uncertain"],
        "mirrored_detected": figures["turned_0_mirrored"]["mirror_detected"],
        "mirrored_sides_uncertain": figures["turned_0_mirrored"]["sides_uncertain"],
        "turned_refused": rate(
            sum(figures[f"turned_{r}{m}"]["refused"]["count"] for r in ROTATIONS[1:]
                for m in ("", "_mirrored")),
            sum(figures[f"turned_{r}{m}"]["refused"]["n"] for r in ROTATIONS[1:]
                for m in ("", "_mirrored"))),
    }
    return figures


def _read(gate: ChestGate, inputs: torch.Tensor, batch_size: int) -> list[GateReading]:
    readings: list[GateReading] = []
    for start in range(0, len(inputs), batch_size):
        readings += gate.read_batch(inputs[start:start + batch_size])
    return readings

