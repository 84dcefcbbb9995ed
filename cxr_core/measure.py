"""Measurements from masks: areas, lung ratios, cardiothoracic ratio."""

from __future__ import annotations

import numpy as np

from cxr_core.analysis import Measurement, Segment
from cxr_core.radiograph import PixelSpacing

AP_VIEWS = frozenset({"AP"})


def make_segment(name: str, mask: np.ndarray, spacing: PixelSpacing) -> Segment:
    pixels = int(mask.sum())
    area = pixels * spacing.pixel_area_mm2 if spacing.trusted else None  # type: ignore[operator]
    return Segment(name=name, mask=mask, pixel_count=pixels, area_mm2=area)


def area_measurements(segments: dict[str, Segment], spacing: PixelSpacing) -> list[Measurement]:
    """One area per segment: mm² when the spacing is trustworthy, else pixel counts."""
    results = []
    for segment in segments.values():
        if segment.area_mm2 is not None:
            results.append(Measurement(
                f"{segment.name}_area", round(segment.area_mm2, 1), "mm2",
                f"pixel count x pixel area from {spacing.source.value}"))
        else:
            results.append(Measurement(
                f"{segment.name}_area", float(segment.pixel_count), "{pixels}",
                f"pixel count; no mm² because pixel spacing is {spacing.source.value} "
                "(not calibrated to the patient)"))
    return results


def lung_ratio(segments: dict[str, Segment]) -> Measurement | None:
    right, left = segments.get("right_lung"), segments.get("left_lung")
    if not right or not left or left.pixel_count == 0:
        return None
    return Measurement("right_to_left_lung_area_ratio",
                       round(right.pixel_count / left.pixel_count, 3), "1",
                       "right lung pixels / left lung pixels (independent of spacing)")


def cardiothoracic_ratio(segments: dict[str, Segment], view: str | None) -> Measurement | None:
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
                       f"across both lungs.{caveat}")


def _max_row_width(mask: np.ndarray) -> int:
    rows = np.nonzero(mask.any(axis=1))[0]
    if rows.size == 0:
        return 0
    sub = mask[rows]
    first = sub.argmax(axis=1)
    last = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    return int((last - first + 1).max())
