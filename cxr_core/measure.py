"""Measurements from masks: areas, lung ratios, cardiothoracic ratio, the lung union."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydicom.sr.coding import Code

from cxr_core.analysis import Measurement, Segment
from cxr_core.radiograph import PixelSpacing
from cxr_core.terminology import AREA, CARDIOTHORACIC_RATIO, LUNG_AREA_RATIO, SEGMENT_TYPES

AP_VIEWS = frozenset({"AP"})
LUNG_SEGMENTS = ("right_lung", "left_lung")


def make_segment(name: str, mask: np.ndarray, spacing: PixelSpacing,
                 model_id: str | None = None, quality: float | None = None) -> Segment:
    pixels = int(mask.sum())
    area = pixels * spacing.pixel_area_mm2 if spacing.trusted else None  # type: ignore[operator]
    return Segment(name=name, mask=mask, pixel_count=pixels, area_mm2=area, model_id=model_id,
                   quality=quality)


def mask_window(mask: np.ndarray, pad: int) -> tuple[slice, slice] | None:
    """The box of ``mask``'s pixels grown by ``pad`` on every side (within the image);
    None for an empty mask.

    An erosion or dilation of the mask by at most ``pad`` - 1 steps, or a filter of
    radius ``pad`` of an image that is zero outside it, gives within the box what it
    gives on the whole image (outside the box it gives nothing), for a fraction of the
    pixels: a lung or the heart is a fraction of a radiograph.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(mask.any(axis=0))
    return (slice(max(0, int(rows[0]) - pad), int(rows[-1]) + pad + 1),
            slice(max(0, int(columns[0]) - pad), int(columns[-1]) + pad + 1))


def lung_union(masks: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Both lungs as one mask, or None when neither lung is among ``masks``."""
    lungs = [masks[name] for name in LUNG_SEGMENTS if name in masks]
    return np.logical_or.reduce(lungs) if lungs else None


def area_measurement(name: str, segment: Segment, spacing: PixelSpacing, *, site: Code,
                     laterality: Code | None) -> Measurement:
    """The area of ``segment``: mm² when the spacing is trustworthy, else its pixel count."""
    if segment.area_mm2 is not None:
        return Measurement(name, round(segment.area_mm2, 1), "mm2",
                           f"pixel count x pixel area from {spacing.source.value}",
                           concept=AREA, site=site, laterality=laterality)
    return Measurement(name, float(segment.pixel_count), "{pixels}",
                       f"pixel count; no mm² because pixel spacing is {spacing.source.value} "
                       "(not calibrated to the patient)",
                       concept=AREA, site=site, laterality=laterality)


def area_measurements(segments: Mapping[str, Segment],
                      spacing: PixelSpacing) -> list[Measurement]:
    """One area per segment, named ``<segment>_area``, at the segment's own site."""
    results = []
    for segment in segments.values():
        kind = SEGMENT_TYPES[segment.name]
        results.append(area_measurement(f"{segment.name}_area", segment, spacing,
                                        site=kind.property_type, laterality=kind.modifier))
    return results


def lung_ratio(segments: Mapping[str, Segment]) -> Measurement | None:
    right, left = segments.get("right_lung"), segments.get("left_lung")
    if not right or not left or left.pixel_count == 0:
        return None
    return Measurement("right_to_left_lung_area_ratio",
                       round(right.pixel_count / left.pixel_count, 3), "1",
                       "right lung pixels / left lung pixels (independent of spacing)",
                       concept=LUNG_AREA_RATIO)


def cardiothoracic_ratio(segments: Mapping[str, Segment],
                         view: str | None) -> Measurement | None:
    """Maximal horizontal heart width / maximal horizontal thoracic (outer lung) width.

    The heart width is taken over the lower two thirds of the cardiomediastinal mask so
    the upper mediastinum does not count; AP projection magnifies the heart, so the
    derivation says so.
    """
    heart, right, left = (segments.get(n) for n in ("heart", "right_lung", "left_lung"))
    if not heart or not right or not left or heart.pixel_count == 0:
        return None
    lungs = right.mask | left.mask
    thoracic = _max_row_width(lungs)
    rows = np.nonzero(heart.mask.any(axis=1))[0]
    lower = heart.mask.copy()
    lower[: rows[0] + (rows[-1] - rows[0]) // 3] = False
    cardiac = _max_row_width(lower)
    if thoracic == 0:
        return None
    caveat = " AP projection magnifies the heart: not comparable with PA." if (
        view in AP_VIEWS) else ""
    return Measurement("cardiothoracic_ratio", round(cardiac / thoracic, 3), "1",
                       "max heart width (lower 2/3 of cardiomediastinal mask) / max width "
                       f"across both lungs.{caveat}", concept=CARDIOTHORACIC_RATIO)


def _max_row_width(mask: np.ndarray) -> int:
    rows = np.nonzero(mask.any(axis=1))[0]
    if rows.size == 0:
        return 0
    sub = mask[rows]
    first = sub.argmax(axis=1)
    last = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    return int((last - first + 1).max())
