"""The engine's input: a presentation-ready chest radiograph, and the header values that
say what a radiograph shows."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import pydicom


class SpacingSource(enum.StrEnum):
    """Where a pixel spacing came from, which decides whether mm are trustworthy."""

    PIXEL_SPACING = "PixelSpacing"
    """(0028,0030): spacing in the patient (or calibrated by the modality)."""
    CALIBRATED = "calibrated"
    """ImagerPixelSpacing corrected by EstimatedRadiographicMagnificationFactor,
    or a spacing the user gave explicitly."""
    IMAGER_PIXEL_SPACING = "ImagerPixelSpacing"
    """(0018,1164): at the detector, magnified; not a patient measurement."""
    UNKNOWN = "unknown"


CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "PORT CHEST", "TORAX", "TORSO"})
"""BodyPartExamined values of a chest radiograph (an empty value is taken as unknown)."""
LATERAL_VIEWS = frozenset({"LL", "RL", "LLD", "RLD", "LATERAL", "LAT"})
"""ViewPosition values of a lateral view."""

TRUSTED_SPACING_SOURCES = frozenset({SpacingSource.PIXEL_SPACING, SpacingSource.CALIBRATED})


@dataclass(frozen=True)
class PixelSpacing:
    """Row and column spacing in mm together with their provenance."""

    row_mm: float | None
    column_mm: float | None
    source: SpacingSource

    @classmethod
    def unknown(cls) -> PixelSpacing:
        return cls(None, None, SpacingSource.UNKNOWN)

    @property
    def trusted(self) -> bool:
        """True when areas in mm² derived from this spacing describe the patient."""
        return self.source in TRUSTED_SPACING_SOURCES and self.row_mm is not None

    @property
    def pixel_area_mm2(self) -> float | None:
        if self.row_mm is None or self.column_mm is None:
            return None
        return self.row_mm * self.column_mm

    def as_dict(self) -> dict[str, object]:
        return {
            "row_mm": self.row_mm,
            "column_mm": self.column_mm,
            "source": self.source.value,
            "trusted_for_mm": self.trusted,
        }


@dataclass
class Radiograph:
    """A chest radiograph as every face hands it to the engine.

    Attributes
    ----------
    pixels:
        2D float32 array, MONOCHROME2 (high = bright = dense), Modality/VOI LUT applied.
    spacing:
        Pixel spacing with its source.
    view_position:
        ``"PA"``, ``"AP"``, ``"LL"`` ... as read from the header or manifest, or ``None``.
    source_dataset:
        The DICOM header without pixel data (for derivation), or ``None`` for image files.
    id:
        A short, non-identifying name used for output folders and logs.
    mirrored:
        The patient's right is on the image's right: what the header says
        (PatientOrientation ``R\\...``) until the engine's gate has looked at the anatomy.
    legacy_format:
        Read from a DICOM file without File Meta (ACR-NEMA style).
    """

    pixels: np.ndarray
    spacing: PixelSpacing
    id: str
    view_position: str | None = None
    source_dataset: pydicom.Dataset | None = None
    mirrored: bool = False
    legacy_format: bool = False
    """Read from a DICOM file without File Meta (ACR-NEMA style)."""

    def __post_init__(self) -> None:
        if self.pixels.ndim != 2:
            raise ValueError(f"pixels: expected a 2D array, got shape {self.pixels.shape}")
        if not np.issubdtype(self.pixels.dtype, np.floating):
            self.pixels = self.pixels.astype(np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))

    @property
    def is_dicom(self) -> bool:
        return self.source_dataset is not None

    @property
    def is_lateral(self) -> bool:
        """The header says this is a lateral view."""
        return self.view_position in LATERAL_VIEWS
