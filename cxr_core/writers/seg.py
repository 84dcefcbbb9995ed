"""DICOM-SEG (BINARY, highdicom) of named masks, for CR/DX/SC sources.

Projection radiographs have no Frame of Reference, so highdicom builds a single-frame
derivation without plane positions; we add what it leaves out for these IODs: the
laterality modifier on Lung (highdicom issue 458) and PatientOrientation (Type 2C, which
dciodvfy asks for).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.coding import Code

from cxr_core.radiograph import PixelSpacing
from cxr_core.terminology import ARTIFICIAL_INTELLIGENCE, SEGMENT_TYPES
from cxr_core.writers.derivation import (
    derived_uid,
    quiet_person_name_warnings,
    source_for_derivation,
)
from cxr_core.writers.identity import MANUFACTURER, SEG_SERIES_NUMBER, software_version


def build_seg(
    source: pydicom.Dataset,
    masks: Mapping[str, np.ndarray],
    *,
    spacing: PixelSpacing,
    algorithm: str,
    segment_algorithms: Mapping[str, str] | None = None,
    manual: bool = False,
    entropy: Sequence[str] = (),
    series_number: int = SEG_SERIES_NUMBER,
) -> hd.seg.Segmentation:
    """Build one SEG of ``masks`` for the ``source`` image.

    Parameters
    ----------
    source:
        The source image's header (pixel data not needed).
    masks:
        Boolean masks at the source's size, by segment name; those that are not in
        :data:`~cxr_core.terminology.SEGMENT_TYPES` are left out, the rest are written in
        that table's order.
    spacing:
        The source's pixel spacing as the reader took it.
    algorithm:
        ``name@version`` of the model(s), comma-separated: hashed into the UIDs, and each
        segment's algorithm unless ``segment_algorithms`` names its own.
    segment_algorithms:
        ``name@version`` of the model that drew each segment, by segment name.
    manual:
        Mark segments SEMIAUTOMATIC (model output corrected by a person), not AUTOMATIC.
    entropy:
        Extra strings hashed into the UIDs (e.g. an export time for corrected masks).
    series_number:
        The SEG's series number.

    Raises
    ------
    ValueError
        When no mask is one of ours.
    """
    source = source_for_derivation(source, spacing)
    names = [n for n in SEGMENT_TYPES if n in masks]
    if not names:
        raise ValueError(f"masks: none of {sorted(masks)} is a known segment")
    drawn_by = segment_algorithms or {}
    descriptions = [_description(i + 1, name, drawn_by.get(name, algorithm), manual)
                    for i, name in enumerate(names)]
    pixel_array = np.stack([masks[n] for n in names], axis=-1)[None]
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
            software_versions=software_version(),
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
            name=model_name[:64], family=ARTIFICIAL_INTELLIGENCE,
            version=version or software_version()),
        tracking_uid=derived_uid(algorithm, name, "tracking"),
        tracking_id=name,
        display_color=hd.color.CIELabColor.from_rgb(*segment.rgb),
    )


def _add_laterality_modifiers(seg: pydicom.Dataset, names: Sequence[str]) -> None:
    for item, name in zip(seg.SegmentSequence, names, strict=True):
        modifier: Code | None = SEGMENT_TYPES[name].modifier
        if modifier is None:
            continue
        code = pydicom.Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = (
            modifier.value, modifier.scheme_designator, modifier.meaning)
        item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [code]
