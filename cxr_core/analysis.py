"""The engine's output: everything a writer or a face needs about one radiograph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, overload

import numpy as np
from pydicom.sr.coding import Code

from cxr_core.flags import QualityFlag
from cxr_core.radiograph import Radiograph
from cxr_core.zones import LungZone


@dataclass
class Segment:
    name: str
    mask: np.ndarray
    """Boolean, source resolution."""
    pixel_count: int
    area_mm2: float | None
    """Only when the spacing is trustworthy (PixelSpacing or calibrated)."""
    model_id: str | None = None
    """``name@version`` of the model that drew this mask (SEG algorithm identification)."""
    quality: float | None = None
    """How far to trust the mask, 0..1 (:mod:`cxr_core.mask_quality`), or None."""


@dataclass
class Measurement:
    name: str
    """A stable, unique name (``heart_area``, ``pneumothorax_right_hemithorax_percent``)."""
    value: float
    unit: str
    """UCUM: ``mm2``, ``{pixels}``, ``1`` (ratio), ``%`` (:data:`cxr_core.terminology.UNITS`)."""
    derivation: str
    """How it was computed, including any caveat (spacing source, view)."""
    concept: Code
    """What is measured (area, cardiothoracic ratio...), as the SR names it."""
    site: Code | None = None
    """Where: the structure measured (lung, heart, pneumothorax), if any."""
    laterality: Code | None = None
    """The patient side of ``site``, if it has one."""
    method: Code | None = None
    """How it was measured, when the concept alone does not say (the SR's method)."""

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit,
                "derivation": self.derivation}


class LazyHeatmap(Protocol):
    """A heat map made at source resolution only when read (:class:`cxr_core.explain.HeatMap`)."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def full(self) -> np.ndarray:
        """The map at source resolution, float32 0..1."""

    def __getitem__(self, index: tuple[slice, slice]) -> np.ndarray:
        """``map[::step, ::step]``, without making the full map."""


class _HeatmapField:
    """``Finding.heatmap``: set to an array, a :class:`LazyHeatmap` or None; read, the
    array at source resolution (a lazy map makes it then). ``Finding.heat`` gives what
    was set, for readers that need only a subsampled grid."""

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> None: ...

    @overload
    def __get__(self, obj: Finding, owner: type | None = None) -> np.ndarray | None: ...

    def __get__(self, obj: Finding | None, owner: type | None = None) -> np.ndarray | None:
        if obj is None:
            return None  # the dataclass default
        heat = obj.heat
        return heat if heat is None or isinstance(heat, np.ndarray) else heat.full()

    def __set__(self, obj: Finding, value: np.ndarray | LazyHeatmap | None) -> None:
        # the dataclass passes the field's default, this descriptor, when none is given
        obj.__dict__["_heat"] = None if isinstance(value, _HeatmapField) else value


@dataclass
class Finding:
    name: str
    code: Code
    probability: float
    threshold: float
    positive: bool
    heatmap: _HeatmapField = field(default=_HeatmapField(), repr=False, compare=False)
    """0..1 float at source resolution, or None; may be set to a lazy map, made at
    source resolution when first read."""
    model_id: str | None = None
    """``name@version`` of the model that made this finding (SR algorithm identification)."""
    note: str | None = None
    """What decided when a rule, not the probability against the threshold, made the
    call (e.g. "below the minimum area, not reported"); shown wherever the finding is."""
    zones: list[LungZone] = field(default_factory=list)
    """The lung zones a positive finding's heat map lies in, most first
    (:mod:`cxr_core.zones`); empty without a map or lungs."""

    @property
    def heat(self) -> np.ndarray | LazyHeatmap | None:
        """The heat map as set: read ``heat[::step, ::step]`` and ``heat.shape`` from it
        to avoid making a lazy map at source resolution."""
        heat: np.ndarray | LazyHeatmap | None = self.__dict__.get("_heat")
        return heat

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "name": self.name,
            "code": [self.code.value, self.code.scheme_designator, self.code.meaning],
            "probability": self.probability, "threshold": self.threshold,
            "positive": self.positive}
        if self.positive:
            summary["zones"] = [zone.summary() for zone in self.zones]
        if self.note:
            summary["note"] = self.note
        return summary


@dataclass(frozen=True)
class ModelRef:
    """Which model took part in an analysis: recorded in every output."""

    id: str
    """``name@version``."""
    task: str
    sha256: str
    """The first 16 hex digits of the weights' sha256."""

    def summary(self) -> dict[str, str]:
        return {"id": self.id, "task": self.task, "sha256": self.sha256}


@dataclass
class Analysis:
    radiograph: Radiograph
    segments: dict[str, Segment] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    quality_flags: list[QualityFlag] = field(default_factory=list)
    models: list[ModelRef] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    checks: dict[str, float] = field(default_factory=dict)
    """What the engine's checks measured on the input (the gate's probabilities...)."""

    def measurement(self, name: str) -> Measurement | None:
        return next((m for m in self.measurements if m.name == name), None)

    def flag(self, flag: QualityFlag) -> None:
        """Record ``flag`` once."""
        if flag not in self.quality_flags:
            self.quality_flags.append(flag)

    @property
    def algorithm(self) -> str:
        """The models that made this analysis, ``name@version`` joined by commas."""
        return ", ".join(model.id for model in self.models)

    @property
    def review_score(self) -> float | None:
        """The worst lung's mask agreement (:func:`cxr_core.mask_quality.review_score`):
        review the lowest first; None without lung estimates."""
        from cxr_core.mask_quality import review_score

        return review_score(self.segments)

    @property
    def mask_models(self) -> str:
        """The models that drew the masks, ``name@version`` joined by commas, in order."""
        drawn = dict.fromkeys(s.model_id for s in self.segments.values() if s.model_id)
        return ", ".join(drawn)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no pixel arrays, no patient identifiers)."""
        return {
            "id": self.radiograph.id,
            "rows": self.radiograph.shape[0],
            "columns": self.radiograph.shape[1],
            "view_position": self.radiograph.view_position,
            "pixel_spacing": self.radiograph.spacing.as_dict(),
            "segments": [
                {"name": s.name, "pixel_count": s.pixel_count, "area_mm2": s.area_mm2,
                 **({"quality": s.quality} if s.quality is not None else {})}
                for s in self.segments.values()
            ],
            **({"review_score": self.review_score} if self.review_score is not None else {}),
            "measurements": [m.summary() for m in self.measurements],
            "findings": [f.summary() for f in self.findings],
            "quality_flags": [str(flag) for flag in self.quality_flags],
            "models": [model.summary() for model in self.models],
            **({"checks": self.checks} if self.checks else {}),
            "timings_s": self.timings,
        }
