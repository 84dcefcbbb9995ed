"""The engine's output: everything a writer or a face needs about one radiograph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxr_core.radiograph import Radiograph


@dataclass
class Segment:
    name: str
    mask: np.ndarray
    """Boolean, source resolution."""
    pixel_count: int
    area_mm2: float | None
    """Only when the spacing is trustworthy (PixelSpacing or calibrated)."""


@dataclass
class Measurement:
    name: str
    value: float
    unit: str
    """UCUM: ``mm2``, ``{pixels}``, ``1`` (ratio), ``%``."""
    derivation: str
    """How it was computed, including any caveat (spacing source, view)."""


@dataclass
class Finding:
    name: str
    code: tuple[str, str, str]
    """(value, scheme, meaning)."""
    probability: float
    threshold: float
    positive: bool
    heatmap: np.ndarray | None = None
    """0..1 float at source resolution, or None."""
    model_id: str | None = None
    """``name@version`` of the model that made this finding (SR algorithm identification)."""


@dataclass
class Analysis:
    radiograph: Radiograph
    segments: dict[str, Segment] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    quality_flags: list[str] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def measurement(self, name: str) -> Measurement | None:
        return next((m for m in self.measurements if m.name == name), None)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no pixel arrays, no patient identifiers)."""
        return {
            "id": self.radiograph.id,
            "rows": self.radiograph.shape[0],
            "columns": self.radiograph.shape[1],
            "view_position": self.radiograph.view_position,
            "pixel_spacing": self.radiograph.spacing.as_dict(),
            "segments": [
                {"name": s.name, "pixel_count": s.pixel_count, "area_mm2": s.area_mm2}
                for s in self.segments.values()
            ],
            "measurements": [m.__dict__ for m in self.measurements],
            "findings": [
                {"name": f.name, "code": list(f.code), "probability": f.probability,
                 "threshold": f.threshold, "positive": f.positive}
                for f in self.findings
            ],
            "quality_flags": self.quality_flags,
            "models": self.models,
            "timings_s": self.timings,
        }
