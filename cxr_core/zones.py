"""Lung zones and where in them a finding's heat map lies.

Zone definition
---------------
Each lung (the lung model's ``right_lung`` and ``left_lung`` masks) is cut into thirds of
its own height: from its top-most to its bottom-most mask row, three bands of equal
height; a zone is the lung mask within one band (``right upper``, ``right middle``,
``right lower``, and the same on the left). This is the usual image-analysis proxy for the
radiologist's zones (upper: apex to the 2nd anterior rib; middle: 2nd to 4th anterior
rib; lower: below the 4th), which need the ribs. The sides are the patient's: the masks
are named by patient side (the segmenter flips a mirrored image into radiological display
and flips its masks back), so a mirrored image needs nothing more here.

Attribution
-----------
A finding's share in a zone is the heat-map mass in that zone over the heat-map mass in
both lungs. Zones holding at least :data:`MIN_SHARE` are reported, most first; the top
zone always is (the largest of six shares is at least 1/6). Maps are read on a grid of at
most :data:`ATTRIBUTION_SIDE` pixels (Grad-CAM comes from a 7x7 grid: nothing is lost),
so the cost is a few milliseconds at any image size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # analysis imports this module
    from cxr_core.analysis import LazyHeatmap

LEVELS = ("upper", "middle", "lower")
"""The thirds of each lung, top to bottom."""
SIDE_SEGMENTS = {"right": "right_lung", "left": "left_lung"}
"""The patient side of each zone, and the lung segment it comes from."""
MIN_SHARE = 0.2
"""A zone holding at least this share of the heat in the lungs is reported."""
ATTRIBUTION_SIDE = 512
"""Heat maps and masks are subsampled to at most this many pixels a side."""
_FLAT = 1e-3
"""Heat that varies less than this within the lungs says nothing about where."""


@dataclass(frozen=True)
class LungZone:
    """One lung zone and the share of a finding's heat in it."""

    side: str
    """``right`` or ``left``: the patient's side."""
    level: str
    """``upper``, ``middle`` or ``lower``: the third of that lung's height."""
    share: float
    """Heat-map mass in the zone over the mass in both lungs, 0..1."""

    @property
    def name(self) -> str:
        """``right lower zone``: as a reader says it."""
        return f"{self.side} {self.level} zone"

    def summary(self) -> dict[str, str | float]:
        return {"zone": self.name, "side": self.side, "level": self.level,
                "share": round(self.share, 3)}


def zone_key(side: str, level: str) -> str:
    """``right_lower``: the key of a zone in :func:`zone_masks`."""
    return f"{side}_{level}"


def lung_bands(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]] | None:
    """Row ranges ``[start, stop)`` of the three thirds of a lung's height, top first;
    None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    edges = np.rint(np.linspace(top, bottom, len(LEVELS) + 1)).astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(len(LEVELS))]


def zone_masks(lungs: Mapping[str, npt.NDArray[np.bool_]]) -> dict[str, npt.NDArray[np.bool_]]:
    """The six zone masks (``right_upper`` ... ``left_lower``) of the lung masks by segment
    name; a lung that is missing or empty has no zones.

    Parameters
    ----------
    lungs:
        Boolean masks by segment name (``right_lung``, ``left_lung``); other names are
        ignored.
    """
    zones: dict[str, npt.NDArray[np.bool_]] = {}
    for side, segment in SIDE_SEGMENTS.items():
        mask = lungs.get(segment)
        bands = None if mask is None else lung_bands(mask)
        if mask is None or bands is None:
            continue
        for level, (start, stop) in zip(LEVELS, bands, strict=True):
            zone = np.zeros_like(mask, dtype=bool)
            zone[start:stop] = mask[start:stop]
            zones[zone_key(side, level)] = zone
    return zones


def zone_shares(heatmap: npt.NDArray[np.floating] | LazyHeatmap,
                lungs: Mapping[str, npt.NDArray[np.bool_]]) -> list[LungZone]:
    """Every zone with its share of the heat in the lungs, most first; empty when there
    are no lungs or the heat within them is flat.

    Parameters
    ----------
    heatmap:
        0..1 heat, shaped like the masks; a lazy map is read on the subsampled grid only.
    lungs:
        Boolean masks by segment name (``right_lung``, ``left_lung``).
    """
    masks = {side: lungs[segment] for side, segment in SIDE_SEGMENTS.items()
             if segment in lungs}
    for mask in masks.values():
        if mask.shape != heatmap.shape:
            raise ValueError(f"lungs: shape {mask.shape} differs from the heat map's "
                             f"{heatmap.shape}")
    step = max(1, -(-max(heatmap.shape) // ATTRIBUTION_SIDE))
    heat = np.asarray(heatmap[::step, ::step], dtype=np.float64)
    masses: dict[tuple[str, str], float] = {}
    inside: list[npt.NDArray[np.float64]] = []
    for side, full in masks.items():
        mask = full[::step, ::step]  # a view; an empty (or off-grid) lung has no bands
        bands = lung_bands(mask)
        if bands is None:
            continue
        row_mass = np.where(mask, heat, 0.0).sum(axis=1)
        inside.append(heat[mask])
        for level, (start, stop) in zip(LEVELS, bands, strict=True):
            masses[side, level] = float(row_mass[start:stop].sum())
    values = np.concatenate(inside) if inside else np.zeros(0)
    total = sum(masses.values())
    if values.size == 0 or float(np.ptp(values)) <= _FLAT or total <= 0:
        return []
    zones = [LungZone(side, level, mass / total) for (side, level), mass in masses.items()]
    return sorted(zones, key=lambda zone: -zone.share)


def reported_zones(shares: list[LungZone], min_share: float = MIN_SHARE) -> list[LungZone]:
    """The zones a finding names: those holding at least ``min_share``, and the top one
    always; ``shares`` most first, as :func:`zone_shares` returns them."""
    return [zone for index, zone in enumerate(shares) if index == 0 or zone.share >= min_share]


def finding_zones(heatmap: npt.NDArray[np.floating] | LazyHeatmap,
                  lungs: Mapping[str, npt.NDArray[np.bool_]]) -> list[LungZone]:
    """The zones a positive finding with this heat map is reported in, most first."""
    return reported_zones(zone_shares(heatmap, lungs))
