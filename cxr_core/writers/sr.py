"""Comprehensive SR with TID 1500, following IHE AI Results (AIR) conventions.

The content tree (``docs/conformance.md``, section "TID 1500 SR"):

- Observation Context: one Device observer (TID 1004) per model that took part, with a
  Device Observer UID derived from its ``name@version`` only, so it is the same in every
  report that model version made.
- Procedure reported: SCT 363679005 "Imaging procedure", from CID 100 (the code PS3.16
  gives TID 1500 row 4); the specific procedure, Plain chest X-ray, is the SR's Performed
  Procedure Code.
- Image Library (TID 1600): the source image.
- One planar ROI group (TID 1410) per measured structure, referencing its SEG frame
  (Referenced Segmentation Frame + Source image for segmentation): Finding Category and
  Finding from the segment's codes, the Finding Site with its laterality at group level
  (readers such as dcmqi interpret it only there), and its areas (and, for a pneumothorax,
  the percentage of that hemithorax and Collins' estimate). A pneumothorax is the Finding,
  the Lung on its side its Finding Site: one group per side.
- One image-level group (TID 1501) for the ratios between structures, with a Comment on
  the pixel spacing (areas are pixel counts when it is not trustworthy, UCUM ``{pixels}``).
- One image-level group (TID 1501) per finding: Finding, the probability NUM (UCUM
  ``1``), the Present/Absent qualitative evaluation, for a positive finding the lung zones
  its heat map lies in (Finding Site with laterality) and, when a decision rule overrode
  the probability, a Comment saying which.

Each group names the model that made it (TID 4019 Algorithm Identification), whose
observer is in the Observation Context. Without a SEG the structure groups are TID 1501
image-level groups with the same content.

The content tree is written with pydicom (:mod:`cxr_core.writers.sr_content`), item for
item as highdicom's template classes write it; highdicom's ``ComprehensiveSR`` writes the
document's modules around it (see :func:`_document`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pydicom
from highdicom.sr import ComprehensiveSR
from highdicom.sr.templates import _get_coded_modality as coded_modality  # TID 1602 row 1
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from cxr_core.analysis import Analysis, Finding, ModelRef
from cxr_core.analysis import Measurement as EngineMeasurement
from cxr_core.terminology import (
    ABSENT,
    ANATOMICAL_STRUCTURE,
    COMMENT,
    IMAGING_PROCEDURE,
    LUNG,
    LUNG_ZONES,
    PLAIN_CHEST_XRAY,
    PRESENT,
    PROBABILITY,
    SEGMENT_TYPES,
    SIDES,
    UNITS,
    SegmentType,
)
from cxr_core.writers.derivation import (
    derived_uid,
    quiet_person_name_warnings,
    source_for_derivation,
)
from cxr_core.writers.identity import MANUFACTURER, SR_SERIES_NUMBER, software_version
from cxr_core.writers.module_table import use_shipped_modules
from cxr_core.writers.sr_content import (
    CONTAINS,
    HAS_ACQ_CONTEXT,
    HAS_CONCEPT_MOD,
    algorithm_identification,
    code_item,
    container,
    device_observer,
    finding_site,
    image_item,
    language,
    measurement_item,
    num_item,
    text_item,
    tracking_identifier,
    with_children,
)

SOURCE = Code("260753009", "SCT", "Source")
"""TID 1601's concept name for an image in the library (as highdicom writes it)."""
PROJECTION_MODALITIES = {"CR": Code("CR", "DCM", "Computed Radiography"),
                         "DX": Code("DX", "DCM", "Digital Radiography")}
FINDING_CATEGORY = Code("276214006", "SCT", "Finding category")
FINDING = Code("121071", "DCM", "Finding")
PIXELS = Code("{pixels}", "UCUM", "Pixels")
SOURCE_FOR_SEGMENTATION = Code("121233", "DCM", "Source Image for Segmentation")
"""As highdicom writes it (pydicom's ``codes`` spell the meaning in lower case)."""


@dataclass
class _Structure:
    """The measurements of one structure: a segment, on one side for a finding segment."""

    segment: str
    laterality: Code | None
    measurements: list[EngineMeasurement] = field(default_factory=list)


def build_sr(source: pydicom.Dataset, analysis: Analysis, *,
             seg: pydicom.Dataset | None = None,
             entropy: Sequence[str] = ()) -> pydicom.Dataset:
    """Build the TID 1500 report of ``analysis`` for its DICOM ``source`` image.

    Parameters
    ----------
    source:
        The analysed image's DICOM header.
    analysis:
        What the engine found in it.
    seg:
        The SEG of ``analysis``' masks: each structure's group references its frame, and
        the SEG is in the evidence. Without it the groups reference the source image only.
    entropy:
        Extra strings hashed into the SR's UIDs (e.g. a digest of the source's content).

    Returns
    -------
    pydicom.Dataset
        The Comprehensive SR document, with its file meta information.
    """
    source = source_for_derivation(source, analysis.radiograph.spacing)
    algorithm = analysis.algorithm or MANUFACTURER
    source_uid = str(source.SOPInstanceUID)
    basis = (source_uid, algorithm, *entropy)  # what the group tracking UIDs derive from
    groups = [_structure_group(structure, analysis, source, seg, basis)
              for structure in _structures(analysis)]
    groups.append(_relations_group(analysis, source, basis))
    groups += [_finding_group(f, source, f.model_id or algorithm, basis)
               for f in analysis.findings]
    content = [language(), *_observation_context(analysis.models),
               code_item(codes.DCM.ProcedureReported, IMAGING_PROCEDURE, HAS_CONCEPT_MOD),
               _image_library(source),
               container(codes.DCM.ImagingMeasurements, CONTAINS, children=groups)]
    return _document(source, seg, content,
                     series_uid=derived_uid(source_uid, "sr-series", algorithm, *entropy),
                     sop_uid=derived_uid(source_uid, "sr", algorithm, *entropy))


def _document(source: pydicom.Dataset, seg: pydicom.Dataset | None,
              content: list[pydicom.Dataset], *, series_uid: str,
              sop_uid: str) -> pydicom.Dataset:
    """The SR document of the report ``content`` (TID 1500's root container's items).

    highdicom's ``ComprehensiveSR`` writes the document's modules: patient and study
    copied from the source, the evidence (source and SEG), the equipment, the flags and
    the file meta information. Given the whole tree it deep-copies it and searches it
    three times, most of an SR's cost, so it gets the root container without its items
    (the evidence lists the same instances: it comes from ``evidence``, not the tree);
    the items are added to the document it writes. The result is a plain dataset: a
    ``ComprehensiveSR``'s ``content`` view would show the empty root.
    """
    root = container(codes.DCM.ImagingMeasurementReport, None, template="1500")
    root.ContentSequence = []
    evidence = [source] + ([seg] if seg is not None else [])
    use_shipped_modules()  # spares highdicom parsing its 22 MB module table
    with quiet_person_name_warnings():
        written = ComprehensiveSR(
            evidence=evidence,
            content=root,
            series_instance_uid=series_uid,
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer=MANUFACTURER,
            is_complete=True,
            performed_procedure_codes=[PLAIN_CHEST_XRAY],
            series_description="SlicerCXR AI results (not verified)",
        )
    document = pydicom.Dataset(written)  # the same elements
    document.file_meta = written.file_meta
    document.preamble = written.preamble
    document.ContentSequence = content
    return document


def device_observer_uid(model_id: str) -> str:
    """The Device Observer UID of a model version (``name@version``): the same in every
    report it contributes to, different for every other model or version."""
    return str(derived_uid("SlicerCXR device observer", model_id))


def _observation_context(models: Sequence[ModelRef]) -> list[pydicom.Dataset]:
    """One Device observer (TID 1002/1004) per model, in the order the engine ran them;
    SlicerCXR itself when no model is recorded."""
    model_ids = [model.id for model in models] or [f"{MANUFACTURER}@{software_version()}"]
    return [item for model_id in model_ids for item in _device(model_id)]


def _device(model_id: str) -> list[pydicom.Dataset]:
    name = model_id.partition("@")[0]
    return device_observer(device_observer_uid(model_id), name[:64], MANUFACTURER,
                           model_id[:64])


def _algorithm_id(algorithm: str) -> list[pydicom.Dataset]:
    name, _, version = algorithm.partition("@")
    return algorithm_identification(name[:64], version or software_version())


def _source_image(source: pydicom.Dataset) -> pydicom.Dataset:
    """TID 1501's Source of Measurement (``highdicom.sr.SourceImageForMeasurementGroup``)."""
    return image_item(codes.DCM.SourceOfMeasurement, source.SOPClassUID,
                      source.SOPInstanceUID)


def _group(template: str, items: list[pydicom.Dataset]) -> pydicom.Dataset:
    """A Measurement Group: TID 1410 (planar ROI) or TID 1501 (image level)."""
    return container(codes.DCM.MeasurementGroup, CONTAINS, template=template, children=items)


# ------------------------------------------------------------------- image library
def _image_library(source: pydicom.Dataset) -> pydicom.Dataset:
    """TID 1600 Image Library with the source image, at its place in TID 1500 (row 5,
    before Imaging Measurements). highdicom's own builder insists on Imager Pixel Spacing
    and Patient Orientation for a CR/DX, which TID 1603 does not require."""
    entry = with_children(image_item(SOURCE, source.SOPClassUID, source.SOPInstanceUID),
                          _library_descriptors(source))
    group = container(codes.DCM.ImageLibraryGroup, CONTAINS, children=[entry])
    return container(codes.DCM.ImageLibrary, CONTAINS, children=[group])


def _library_descriptors(source: pydicom.Dataset) -> list[pydicom.Dataset]:
    """TID 1602 (modality, size) and what TID 1603 describes of a projection image that
    the source states: its Patient Orientation and Imager Pixel Spacing."""
    context = HAS_ACQ_CONTEXT
    items = [code_item(codes.DCM.Modality, _modality(source), context),
             num_item(codes.DCM.PixelDataRows, int(source.Rows), PIXELS, context),
             num_item(codes.DCM.PixelDataColumns, int(source.Columns), PIXELS, context)]
    orientation = list(source.get("PatientOrientation") or [])
    if len(orientation) == 2 and all(orientation):
        items += [text_item(codes.DCM.PatientOrientationRow, orientation[0], context),
                  text_item(codes.DCM.PatientOrientationColumn, orientation[1], context)]
    spacing = list(source.get("ImagerPixelSpacing") or [])
    if len(spacing) == 2 and all(float(v) > 0 for v in spacing):
        millimetre = codes.UCUM.Millimeter
        items += [num_item(codes.DCM.HorizontalPixelSpacing, float(spacing[1]), millimetre,
                           context),
                  num_item(codes.DCM.VerticalPixelSpacing, float(spacing[0]), millimetre,
                           context)]
    return items


def _modality(source: pydicom.Dataset) -> Code:
    """The source's acquisition modality (CID 29) when it states CR or DX (a Secondary
    Capture's SOP class would say only "OT", which CID 29 does not hold)."""
    return PROJECTION_MODALITIES.get(str(source.get("Modality", "")),
                                     coded_modality(source.SOPClassUID))


# ---------------------------------------------------------------------- structures
def _structures(analysis: Analysis) -> list[_Structure]:
    """Each segment's measurements, in SEG order; a segment that is a finding (not an
    anatomical structure) split by the side each measurement names."""
    structures: list[_Structure] = []
    for name, kind in SEGMENT_TYPES.items():
        if name not in analysis.segments:
            continue
        for measurement in analysis.measurements:
            if not _measures(measurement, kind):
                continue
            side = kind.modifier if kind.modifier is not None else measurement.laterality
            found = next((s for s in structures
                          if s.segment == name and _same_side(s.laterality, side)), None)
            if found is None:
                found = _Structure(name, side)
                structures.append(found)
            found.measurements.append(measurement)
    return structures


def _same_side(first: Code | None, second: Code | None) -> bool:
    """Whether two lateralities are the same, None (the whole structure) included
    (pydicom's ``Code.__eq__`` cannot compare with None)."""
    if first is None or second is None:
        return first is second
    return bool(first == second)


def _measures(measurement: EngineMeasurement, kind: SegmentType) -> bool:
    """Whether ``measurement`` is of the structure ``kind`` (on its side, if it has one)."""
    if measurement.site is None or measurement.unit not in UNITS:
        return False
    if measurement.site != kind.property_type:
        return False
    return kind.modifier is None or (measurement.laterality is not None
                                     and measurement.laterality == kind.modifier)


def _finding_and_site(kind: SegmentType, laterality: Code | None) -> tuple[Code, Code]:
    """An anatomical structure is its own site; a finding segment (a pneumothorax) lies at
    the Lung on its side (the engine assigns each of its regions to the nearer lung)."""
    site = kind.property_type if kind.category == ANATOMICAL_STRUCTURE else LUNG
    return kind.property_type, site


def _structure_group(structure: _Structure, analysis: Analysis, source: pydicom.Dataset,
                     seg: pydicom.Dataset | None, basis: Sequence[str]) -> pydicom.Dataset:
    kind = SEGMENT_TYPES[structure.segment]
    finding, site = _finding_and_site(kind, structure.laterality)
    side = f" ({structure.laterality.meaning.lower()})" if (
        structure.laterality is not None and kind.modifier is None) else ""
    segment = analysis.segments[structure.segment]
    items = [  # what both group templates share
        *tracking_identifier(_tracking_uid(structure, seg, basis), f"{kind.label}{side}"),
        code_item(FINDING_CATEGORY, kind.category, CONTAINS),
        code_item(FINDING, finding, CONTAINS),
        finding_site(site, structure.laterality),
        *_algorithm_id(segment.model_id or analysis.algorithm or MANUFACTURER),
        *(_measurement(m) for m in structure.measurements),
    ]
    if seg is None:
        return _group("1501", [*items, _source_image(source)])
    return _group("1410", [*items, *_segment_frame(seg, source, kind.label)])


def _tracking_uid(structure: _Structure, seg: pydicom.Dataset | None,
                  basis: Sequence[str]) -> str:
    """The SEG segment's Tracking UID when the structure is the whole segment, so SR and
    SEG name it alike; else (no SEG, one side of a finding segment) one of its own."""
    kind = SEGMENT_TYPES[structure.segment]
    whole = kind.modifier is not None or structure.laterality is None
    item = _segment_item(seg, kind.label) if seg is not None and whole else None
    if item is not None and "TrackingUID" in item:
        return str(item.TrackingUID)
    side = structure.laterality.value if structure.laterality is not None else ""
    return str(derived_uid(basis, "structure", structure.segment, side))


def _segment_item(seg: pydicom.Dataset, label: str) -> pydicom.Dataset | None:
    return next((item for item in seg.SegmentSequence if item.SegmentLabel == label), None)


def _segment_frame(seg: pydicom.Dataset, source: pydicom.Dataset,
                   label: str) -> list[pydicom.Dataset]:
    """The SEG frame holding segment ``label`` (one source image: one frame a segment) and
    the image it segments.

    PS3.3 Table 10-3: Referenced Segment Number is required only when Referenced Frame
    Number is not present (dciodvfy: "Shall not be present when ReferencedFrameNumber is
    present"); the frame identifies the segment (its Segment Identification).
    """
    item = _segment_item(seg, label)
    if item is None:
        raise ValueError(f"seg: no segment labelled {label!r}")
    number = int(item.SegmentNumber)
    frame = next(index for index, group in enumerate(seg.PerFrameFunctionalGroupsSequence, 1)
                 if int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == number)
    return [image_item(codes.DCM.ReferencedSegmentationFrame, seg.SOPClassUID,
                       seg.SOPInstanceUID, frame=frame),
            image_item(SOURCE_FOR_SEGMENTATION, source.SOPClassUID,
                       source.SOPInstanceUID)]


def _measurement(engine_measurement: EngineMeasurement) -> pydicom.Dataset:
    return measurement_item(engine_measurement.concept, engine_measurement.value,
                       UNITS[engine_measurement.unit], engine_measurement.method)


def _relations_group(analysis: Analysis, source: pydicom.Dataset,
                     basis: Sequence[str]) -> pydicom.Dataset:
    """Measurements between structures (no site of their own: ratios), and the note on
    what the area units mean for this image."""
    spacing = analysis.radiograph.spacing
    note = (f"Areas in mm2 from {spacing.source.value}." if spacing.trusted else
            f"Pixel spacing is {spacing.source.value}: areas are pixel counts, not mm2; "
            "ratios are spacing-independent.")
    if analysis.quality_flags:
        note += " Quality flags: " + ", ".join(analysis.quality_flags) + "."
    return _group("1501", [
        *tracking_identifier(derived_uid(basis, "anatomy"), "Lungs and heart"),
        *_algorithm_id(analysis.mask_models.split(", ")[0] or analysis.algorithm
                       or MANUFACTURER),
        *(_measurement(m) for m in analysis.measurements
          if m.site is None and m.unit in UNITS),
        _source_image(source),
        _comment(note)])


# ------------------------------------------------------------------------ findings
def _finding_group(finding: Finding, source: pydicom.Dataset, algorithm: str,
                   basis: Sequence[str]) -> pydicom.Dataset:
    """Present/Absent and the probability; a comment when a rule, not the probability
    against its threshold, decided (a reader would otherwise see "Probability 0.97 ...
    Absent" as a contradiction)."""
    concept = finding.code
    items = [
        *tracking_identifier(derived_uid(basis, "finding", finding.name),
                             f"Finding: {finding.name}"),
        code_item(FINDING, concept, CONTAINS),
        *_zone_sites(finding),
        *_algorithm_id(algorithm),
        measurement_item(PROBABILITY, round(finding.probability, 4), UNITS["1"]),
        code_item(concept, PRESENT if finding.positive else ABSENT, CONTAINS),  # evaluation
        _source_image(source),
    ]
    if finding.note:
        items.append(_comment(finding.note))
    return _group("1501", items)


def _zone_sites(finding: Finding) -> list[pydicom.Dataset]:
    """Finding Site per lung zone of a positive finding, most first: the zone's SNOMED
    code with the patient side as its laterality (:data:`~cxr_core.terminology.LUNG_ZONES`)."""
    if not finding.positive or not finding.zones:
        return []
    return [finding_site(LUNG_ZONES[zone.level], SIDES[zone.side]) for zone in finding.zones]


def _comment(text: str) -> pydicom.Dataset:
    return text_item(COMMENT, text[:1024], CONTAINS)
