"""DICOM-SEG (BINARY, highdicom) of named masks, for CR/DX/SC sources, and the encoding
every SEG of a radiograph shares (:func:`radiograph_segmentation`; the heat maps' FRACTIONAL
SEG, :mod:`cxr_core.writers.heatmap_seg`, uses it too).

Projection radiographs have no Frame of Reference, and then PS3.3 (A.51.5, Table A.51-2)
wants each segmentation pixel tied to a source pixel through the Derivation Image
functional group only: Pixel Measures, Plane Position (Patient) and Plane Orientation
(Patient) "may be present otherwise if the Frame of Reference is defined in the
patient-relative Reference Coordinate System", so without one they are left out (the
spacing is the source's, which every frame references). highdicom writes a Pixel Measures
item when the source has a Pixel Spacing; it is removed here.

We also add what highdicom leaves out for these IODs: the laterality modifier on Lung
(highdicom issue 458), PatientOrientation (Type 2C, which dciodvfy asks for) and the
source's Body Part Examined; and make every UID a hash of the source (its SOP Instance
UID and a digest of its header and pixels), the models and the segment, so the same
input gives the same object and different inputs never share one.
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
    source_digest,
    source_for_derivation,
)
from cxr_core.writers.identity import MANUFACTURER, SEG_SERIES_NUMBER, software_version
from cxr_core.writers.module_table import use_shipped_modules


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
    digest: str | None = None,
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
    digest:
        :func:`~cxr_core.writers.derivation.source_digest` of the source (header and
        pixels); hashed into every UID. Without it, a digest of the header alone.

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
    # what every UID of this object derives from: the source, its content, the models
    basis = (str(source.SOPInstanceUID), digest or source_digest(source), algorithm, *entropy)
    descriptions = [_description(i + 1, name, drawn_by.get(name) or credited_model(algorithm),
                                 manual, basis) for i, name in enumerate(names)]
    pixel_array = segments_last(np.stack([masks[n] for n in names]).astype(np.uint8))
    seg = radiograph_segmentation(
        source, pixel_array, descriptions, basis=basis, series_number=series_number,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        model_name="SlicerCXR lung segmentation",
        content_label="CORRECTED" if manual else "LUNGS",
        content_description="Masks corrected by a reader" if manual else "Model output")
    _add_laterality_modifiers(seg, names)
    return seg


def radiograph_segmentation(
    source: pydicom.Dataset,
    pixel_array: np.ndarray,
    descriptions: Sequence[hd.seg.SegmentDescription],
    *,
    basis: Sequence[str],
    series_number: int,
    segmentation_type: hd.seg.SegmentationTypeValues,
    model_name: str,
    content_label: str,
    content_description: str,
) -> hd.seg.Segmentation:
    """A SEG of one radiograph in our encoding, whatever its segmentation type.

    No Pixel Measures, Plane Position or Plane Orientation without a Frame of Reference
    (each frame tied to the source by its Derivation Image item), every UID derived from
    ``basis``, Patient Orientation and Body Part Examined from the source.

    Parameters
    ----------
    source:
        The source header, through
        :func:`~cxr_core.writers.derivation.source_for_derivation`.
    pixel_array:
        ``(1, rows, columns, segments)``: uint8 0/1 for BINARY, float 0..1 for FRACTIONAL
        (stored as 0..255, the Maximum Fractional Value).
    descriptions:
        One per segment, in the last axis' order.
    basis:
        What every UID of the object derives from (source UID, source digest, models and
        anything that tells this object from the source's other ones).
    series_number, segmentation_type, model_name, content_label, content_description:
        The SEG's Series Number, Segmentation Type, Manufacturer's Model Name, Content
        Label and Content Description. FRACTIONAL SEGs are of type PROBABILITY.
    """
    use_shipped_modules()  # spares highdicom parsing its 22 MB module table
    with quiet_person_name_warnings():
        seg = hd.seg.Segmentation(
            source_images=[source],
            pixel_array=pixel_array,
            segmentation_type=segmentation_type,
            fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
            segment_descriptions=descriptions,
            series_instance_uid=derived_uid(basis, "seg-series"),
            series_number=series_number,
            sop_instance_uid=derived_uid(basis, "seg"),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=model_name,
            software_versions=software_version(),
            device_serial_number="0",
            content_label=content_label,
            content_description=content_description,
            omit_empty_frames=False,
        )
    _drop_plane_geometry(seg)
    _set_dimension_organization_uid(seg, derived_uid(basis, "dimension-organization"))
    seg.PatientOrientation = source.PatientOrientation
    if source.get("BodyPartExamined"):
        seg.BodyPartExamined = source.BodyPartExamined
    return seg


def segments_last(planes: np.ndarray) -> np.ndarray:
    """``(segments, rows, columns)`` -> the ``(1, rows, columns, segments)`` array highdicom
    takes, as a view: each segment stays one contiguous plane, so highdicom's checks (the
    overlap sum over segments) and its per-frame reads walk whole planes; on a 2k image
    that halves the SEG's build time against a segment-interleaved copy, same values."""
    return np.moveaxis(planes, 0, -1)[None]


def credited_model(algorithm: str) -> str:
    """The model a segment credits: ``algorithm`` when it names one model; for a list,
    ``SlicerCXR@<the list>``, which credits the software without pinning the segment on a
    model that may not have drawn it."""
    if "," not in algorithm:
        return algorithm
    return f"{MANUFACTURER}@{algorithm.replace(' ', '')}"


def _drop_plane_geometry(seg: pydicom.Dataset) -> None:
    """Without a Frame of Reference, Pixel Measures and the plane macros shall not be
    present (PS3.3 Table A.51-2); highdicom adds Pixel Measures when the source has a
    Pixel Spacing."""
    if "FrameOfReferenceUID" in seg:
        return
    groups = [*seg.SharedFunctionalGroupsSequence, *seg.PerFrameFunctionalGroupsSequence]
    for group in groups:
        for keyword in ("PixelMeasuresSequence", "PlanePositionSequence",
                        "PlaneOrientationSequence"):
            if keyword in group:
                delattr(group, keyword)


def _set_dimension_organization_uid(seg: pydicom.Dataset, uid: str) -> None:
    """highdicom draws a random Dimension Organization UID; ours is derived like the rest."""
    for item in seg.DimensionOrganizationSequence:
        item.DimensionOrganizationUID = uid
    for item in seg.DimensionIndexSequence:
        item.DimensionOrganizationUID = uid


def _description(number: int, name: str, algorithm: str, manual: bool,
                 basis: Sequence[str]) -> hd.seg.SegmentDescription:
    """Segment ``number``: its codes, the one model (``name@version``) that drew it, and a
    Tracking UID of this segment in this analysis of this source."""
    segment = SEGMENT_TYPES[name]
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.label,
        segmented_property_category=segment.category,
        segmented_property_type=segment.property_type,
        algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if manual
                        else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC),
        algorithm_identification=algorithm_identification(algorithm),
        tracking_uid=derived_uid(basis, "tracking", name, algorithm),
        tracking_id=name,
        display_color=hd.color.CIELabColor.from_rgb(*segment.rgb),
    )


def algorithm_identification(algorithm: str) -> hd.AlgorithmIdentificationSequence:
    """A segment's algorithm: the one model (``name@version``) that made it, family
    Artificial Intelligence (the package version when the model has none)."""
    model_name, _, version = algorithm.partition("@")
    return hd.AlgorithmIdentificationSequence(
        name=model_name[:64], family=ARTIFICIAL_INTELLIGENCE,
        version=(version or software_version())[:64])


def _add_laterality_modifiers(seg: pydicom.Dataset, names: Sequence[str]) -> None:
    for item, name in zip(seg.SegmentSequence, names, strict=True):
        modifier: Code | None = SEGMENT_TYPES[name].modifier
        if modifier is None:
            continue
        code = pydicom.Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = (
            modifier.value, modifier.scheme_designator, modifier.meaning)
        item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [code]
