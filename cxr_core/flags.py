"""Quality flags: what the engine noticed about an input that a reader must know.

Every flag is a member of :class:`QualityFlag`; its value is the string written into
``analysis.json``, the SR comment, the overlay legend and the Slicer table.
"""

from __future__ import annotations

import enum


class QualityFlag(enum.StrEnum):
    """A caveat attached to an :class:`~cxr_core.analysis.Analysis`."""

    MIRRORED_ORIENTATION = "mirrored_orientation"
    """PatientOrientation says the columns run towards the patient's right (mirrored
    display); sides follow the header."""
    LATERAL_VIEW = "lateral_view"
    """The header's ViewPosition is a lateral view; the models are trained on frontal views."""
    PHOTOMETRIC_MISMATCH = "photometric_mismatch"
    """The pixels were analysed inverted against the header's PhotometricInterpretation."""
    LUNGS_NOT_FOUND = "lungs_not_found"
    """The lung model found lungs over less than a plausible share of the image."""
    ONE_LUNG_NOT_FOUND = "one_lung_not_found"
    """One lung is less than a tenth of the other."""
    FINDINGS_WITHOUT_LUNG_MASK = "findings_without_lung_mask"
    """A lung-masked classifier ran on the whole image because no lung was found."""
    MIRRORED_BY_ANATOMY = "mirrored_by_anatomy"
    """The anatomy shows a mirrored image (patient's right on the image's right) that the
    header did not declare: sides follow the anatomy."""
    ORIENTATION_HEADER_OVERRULED = "orientation_header_overruled"
    """The header declared a mirrored image but the anatomy shows a standard one: sides
    follow the anatomy."""
    SIDES_UNCERTAIN = "sides_uncertain"
    """The anatomy leans against the header's sides but not clearly enough to swap them:
    sides follow the header; check the image's orientation."""
    PADDING_FILLED = "padding_filled"
    """Uniform borders or corners (a PACS frame, a rotation's corners) were filled from
    the image's edge before the models ran."""
    LEGACY_FILE_FORMAT = "legacy_file_format"
    """A DICOM file without File Meta (an ACR-NEMA style file) was read."""
    IMPLAUSIBLE_MEASUREMENT = "implausible_measurement"
    """A measurement fell outside what a frontal chest radiograph can show and was left
    out (e.g. a cardiothoracic ratio above 1)."""
