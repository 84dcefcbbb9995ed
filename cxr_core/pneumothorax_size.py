"""How large a pneumothorax is, on one side of the chest: its share of the hemithorax,
Collins' estimate from interpleural distances and the BTS rim at the hilum.

The engine stage (:mod:`cxr_core.stages.pneumothorax`) and ``cxr evaluate pneumothorax``
(its size check against the SIIM-ACR masks) both use these functions, so the figure a
card states is the figure a report carries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cxr_core.radiograph import PixelSpacing

HEMITHORAX_DEFINITION = (
    "hemithorax = that side's lung mask (lung model) united with the pneumothorax "
    "pixels of that side, holes filled: the lung model outlines the thoracic cavity, "
    "air included, and the union adds any pneumothorax it left out")
COLLINS_REFERENCE = "Collins et al., AJR 1995;165:1127-30"
BTS_REFERENCE = "British Thoracic Society pleural disease guideline (MacDuff et al., Thorax 2010)"
BTS_LARGE_MM = 20.0
"""A rim of at least 2 cm between lung edge and chest wall at the hilum is 'large'."""


def hemithorax(lung: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """One side's thoracic cavity: ``lung`` ∪ ``lesion`` with holes filled
    (:data:`HEMITHORAX_DEFINITION`)."""
    if lung.shape != lesion.shape:
        raise ValueError(f"lesion: shape {lesion.shape} differs from the lung's {lung.shape}")
    return np.asarray(ndimage.binary_fill_holes(lung | lesion))


def hemithorax_percent(lesion: np.ndarray, lung: np.ndarray) -> float:
    """100 × lesion pixels / :func:`hemithorax` pixels; a projected area, not a volume.

    Raises
    ------
    ValueError
        When the hemithorax is empty (no lung and no lesion).
    """
    cavity = hemithorax(lung, lesion)
    total = int(cavity.sum())
    if total == 0:
        raise ValueError("lung: empty hemithorax (no lung and no lesion pixels)")
    return 100.0 * float((lesion & cavity).sum()) / total


@dataclass(frozen=True)
class Collins:
    """Collins' estimate of a pneumothorax's size, in % of the hemithorax volume.

    ``percent = 4.2 + 4.7 × (apical + upper + lower)``, distances in cm
    (:data:`COLLINS_REFERENCE`): the largest apical interpleural distance and the lateral
    interpleural distances at the midpoints of the upper and lower halves of the
    collapsed lung.
    """

    apical_cm: float
    upper_cm: float
    lower_cm: float

    @property
    def percent(self) -> float:
        return min(100.0, 4.2 + 4.7 * (self.apical_cm + self.upper_cm + self.lower_cm))

    def derivation(self, spacing: PixelSpacing) -> str:
        return (f"Collins' formula ({COLLINS_REFERENCE}): 4.2 + 4.7 x (A + B + C) with "
                f"A = {self.apical_cm:.2f} cm, the largest apical interpleural distance, "
                f"B = {self.upper_cm:.2f} cm and C = {self.lower_cm:.2f} cm, the lateral "
                "interpleural distances at the midpoints of the upper and lower halves of "
                "the collapsed lung, read off the pneumothorax mask with pixel spacing from "
                f"{spacing.source.value}; {HEMITHORAX_DEFINITION}; derived for erect PA "
                "radiographs, distances on the detector (not corrected for magnification)")


def collins(lesion: np.ndarray, lung: np.ndarray, spacing: PixelSpacing, *,
            lateral_left: bool) -> Collins | None:
    """Collins' distances from one side's masks, or None when they cannot be read.

    Parameters
    ----------
    lesion, lung:
        That side's pneumothorax and lung masks (boolean, same shape).
    spacing:
        Must be trustworthy (:attr:`PixelSpacing.trusted`, both axes known): distances
        in cm mean nothing otherwise.
    lateral_left:
        Whether the chest wall of this side lies towards image column 0 (patient-right
        on an unmirrored frontal image).

    Returns
    -------
    Collins or None
        None without trustworthy spacing, without a lesion, or when no collapsed lung
        is left on this side (the distances are then undefined).
    """
    if not spacing.trusted or spacing.row_mm is None or spacing.column_mm is None:
        return None
    found = _collapsed_lung(lesion, lung)
    if found is None:
        return None
    cavity, collapsed, rows = found
    apical = _apical_run(cavity, collapsed) * spacing.row_mm / 10
    top, bottom = int(rows[0]), int(rows[-1])
    upper, lower = (round(top + (bottom - top) * share) for share in (0.25, 0.75))
    return Collins(apical_cm=apical,
                   upper_cm=_lateral_gap(cavity[upper], collapsed[upper], lateral_left)
                   * spacing.column_mm / 10,
                   lower_cm=_lateral_gap(cavity[lower], collapsed[lower], lateral_left)
                   * spacing.column_mm / 10)


@dataclass(frozen=True)
class BtsRim:
    """The interpleural distance at the level of the hilum (the BTS size rule)."""

    rim_mm: float

    @property
    def large(self) -> bool:
        return self.rim_mm >= BTS_LARGE_MM

    def derivation(self, spacing: PixelSpacing) -> str:
        return (f"BTS rule ({BTS_REFERENCE}): lateral interpleural distance at the level of "
                f"the hilum, {'>=' if self.large else '<'} {BTS_LARGE_MM:.0f} mm, so "
                f"{'large' if self.large else 'small'}; the hilum is taken at mid-height of "
                "the collapsed lung, read off the pneumothorax mask with pixel spacing from "
                f"{spacing.source.value}; distances on the detector (not corrected for "
                "magnification)")


def bts_rim(lesion: np.ndarray, lung: np.ndarray, spacing: PixelSpacing, *,
            lateral_left: bool) -> BtsRim | None:
    """The rim at the hilum level (mid-height of the collapsed lung), or None under the
    same conditions as :func:`collins`."""
    if not spacing.trusted or spacing.column_mm is None:
        return None
    found = _collapsed_lung(lesion, lung)
    if found is None:
        return None
    cavity, collapsed, rows = found
    hilum = (int(rows[0]) + int(rows[-1])) // 2
    gap = _lateral_gap(cavity[hilum], collapsed[hilum], lateral_left)
    return BtsRim(rim_mm=gap * spacing.column_mm)


def _collapsed_lung(lesion: np.ndarray, lung: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(hemithorax, collapsed lung, rows the collapsed lung spans)``, or None without a
    lesion or without any collapsed lung left (the distances are then undefined)."""
    cavity = hemithorax(lung, lesion)
    collapsed = cavity & ~lesion
    rows = np.nonzero(collapsed.any(axis=1))[0]
    if not lesion.any() or rows.size == 0:
        return None
    return cavity, collapsed, rows


def _apical_run(cavity: np.ndarray, collapsed: np.ndarray) -> int:
    """The largest gap between the top of the cavity and the top of the collapsed lung,
    over the columns the collapsed lung spans (its apex to the chest wall's)."""
    longest = 0
    for column in np.nonzero(collapsed.any(axis=0))[0]:
        gap = int(collapsed[:, column].argmax()) - int(cavity[:, column].argmax())
        longest = max(longest, gap)
    return longest


def _lateral_gap(cavity_row: np.ndarray, collapsed_row: np.ndarray, lateral_left: bool) -> int:
    """Pixels between the chest wall (the cavity's lateral edge) and the collapsed lung's
    lateral edge on one row (0 when the lung reaches the wall)."""
    wall, lung = np.nonzero(cavity_row)[0], np.nonzero(collapsed_row)[0]
    if wall.size == 0 or lung.size == 0:
        return 0
    return int(lung[0] - wall[0]) if lateral_left else int(wall[-1] - lung[-1])
