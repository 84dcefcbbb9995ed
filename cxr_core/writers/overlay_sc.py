"""The overlay as a Secondary Capture, for viewers that cannot display a DICOM-SEG."""

from __future__ import annotations

import highdicom as hd
import pydicom

from cxr_core.analysis import Analysis
from cxr_core.writers.derivation import (
    derived_uid,
    quiet_person_name_warnings,
    source_digest,
    source_for_derivation,
)
from cxr_core.writers.identity import MANUFACTURER, OVERLAY_SERIES_NUMBER
from cxr_core.writers.module_table import use_shipped_modules
from cxr_core.writers.overlay import render_overlay


def build_overlay_sc(source: pydicom.Dataset, analysis: Analysis, *,
                     digest: str | None = None) -> pydicom.Dataset:
    """An RGB Secondary Capture of the masks over the radiograph, in the ``source``'s
    study.

    Its UIDs are hashes of the source SOP Instance UID, ``digest`` (the source's
    :func:`~cxr_core.writers.derivation.source_digest`; by default computed here) and the
    models (like SEG/SR), so a repeated analysis yields the same instance instead of a copy.
    """
    digest = digest or source_digest(source, analysis.radiograph.pixels)
    source = source_for_derivation(source, analysis.radiograph.spacing)
    models = [model.id for model in analysis.models]
    source_uid = str(source.SOPInstanceUID)
    orientation = tuple(source.get("PatientOrientation") or ()) or None
    use_shipped_modules()  # spares highdicom parsing its 22 MB module table
    with quiet_person_name_warnings():
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=render_overlay(analysis),
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=derived_uid(source_uid, digest, "overlay-series", models),
            series_number=OVERLAY_SERIES_NUMBER,
            sop_instance_uid=derived_uid(source_uid, digest, "overlay", models),
            instance_number=1,
            manufacturer=MANUFACTURER,
            # highdicom insists on a value; the source's (possibly empty) one is set below
            patient_orientation=("P", "F"),
            transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
        )
    # Type 2 / 2C: copy what the source says, empty when it says nothing (pydicom's
    # keyword hints do not allow the empty value DICOM does)
    image.PatientOrientation = (list(orientation) if orientation and len(orientation) == 2
                                else None)  # type: ignore[assignment]
    image.Laterality = None  # type: ignore[assignment]
    reference = pydicom.Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    image.SourceImageSequence = [reference]  # lets viewers and tests link it to the source
    image.DerivationDescription = "Segmentation masks drawn over the source image"
    image.SeriesDescription = "SlicerCXR overlay (not for diagnosis)"
    image.BurnedInAnnotation = "NO"
    return image
