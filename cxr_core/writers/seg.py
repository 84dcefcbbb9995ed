"""DICOM-SEG (BINARY, highdicom) of an analysis' masks, for CR/DX/SC sources.

Projection radiographs have no Frame of Reference, so highdicom builds a single-frame
derivation without plane positions; we add what it leaves out for these IODs: the
laterality modifier on Lung (highdicom issue 458) and PatientOrientation (Type 2C, which
dciodvfy asks for).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.coding import Code

import cxr_core
from cxr_core.analysis import Analysis
from cxr_core.segments import SEGMENT_TYPES
from cxr_core.writers.derivation import (
    derived_uid,
    quiet_person_name_warnings,
    source_for_derivation,
)

SEG_SERIES_NUMBER = 901
MANUFACTURER = "SlicerCXR"


def build_seg(
    analysis: Analysis,
    *,
    segment_names: Sequence[str] | None = None,
    manual: bool = False,
    algorithm: str | None = None,
    entropy: Sequence[str] = (),
    series_number: int = SEG_SERIES_NUMBER,
) -> hd.seg.Segmentation:
    """Build one SEG for the analysis' source image.

    Parameters
    ----------
    analysis:
        Must come from a DICOM radiograph (``analysis.radiograph.source_dataset``).
    segment_names:
        Which segments to write (default: all, in :data:`SEGMENT_TYPES` order).
    manual:
        Mark segments SEMIAUTOMATIC (model output corrected by a person), not AUTOMATIC.
    algorithm:
        ``name@version`` of the model; default: the models recorded in the analysis.
    entropy:
        Extra strings hashed into the UIDs (e.g. an export time for corrected masks).
    """
    source = analysis.radiograph.source_dataset
    if source is None:
        raise ValueError("analysis: a SEG needs a DICOM source image; this one is an image file")
    source = source_for_derivation(source)
    names = [n for n in (segment_names or SEGMENT_TYPES) if n in analysis.segments]
    if not names:
        raise ValueError("segment_names: none of them is in the analysis")
    algorithm = algorithm or ", ".join(m["id"] for m in analysis.models) or "SlicerCXR"
    descriptions = [_description(i + 1, name, algorithm, manual) for i, name in enumerate(names)]
    pixel_array = np.stack([analysis.segments[n].mask for n in names], axis=-1)[None]
    source_uid = str(source.SOPInstanceUID)
    with quiet_person_name_warnings():
        seg = hd.seg.Segmentation(
            source_images=[source],
            pixel_array=pixel_array.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=derived_uid(source_uid, "seg-series", algorithm, *entropy),
            series_number=series_number,
            sop_instance_uid=derived_uid(source_uid, "seg", algorithm, *entropy),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name="SlicerCXR lung segmentation",
            software_versions=cxr_core.__version__,
            device_serial_number="0",
            content_label="CORRECTED" if manual else "LUNGS",
            content_description="Masks corrected by a reader" if manual else "Model output",
            omit_empty_frames=False,
        )
    _add_laterality_modifiers(seg, names)
    seg.PatientOrientation = source.PatientOrientation
    return seg


def _description(number: int, name: str, algorithm: str, manual: bool) -> hd.seg.SegmentDescription:
    segment = SEGMENT_TYPES[name]
    model_name, _, version = algorithm.partition("@")
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.label,
        segmented_property_category=segment.category,
        segmented_property_type=segment.property_type,
        algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if manual
                        else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC),
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=model_name[:64], family=Code("123109", "DCM", "Artificial Intelligence"),
            version=version or cxr_core.__version__),
        tracking_uid=derived_uid(algorithm, name, "tracking"),
        tracking_id=name,
        display_color=hd.color.CIELabColor.from_rgb(*segment.rgb),
    )


def _add_laterality_modifiers(seg: pydicom.Dataset, names: Sequence[str]) -> None:
    for item, name in zip(seg.SegmentSequence, names, strict=True):
        modifier = SEGMENT_TYPES[name].modifier
        if modifier is None:
            continue
        code = pydicom.Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = (
            modifier.value, modifier.scheme_designator, modifier.meaning)
        item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [code]
