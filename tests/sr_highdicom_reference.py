"""The TID 1500 SR as cxr_core built it with highdicom's template classes and
``ComprehensiveSR`` before issue 15: the reference ``tests/test_sr_fast.py`` compares
the pydicom-written SR with, element by element.

Kept in the tests only; the choices that do not depend on how the tree is written (which
structures, their tracking UIDs, the modality code) come from :mod:`cxr_core.writers.sr`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
import pydicom
from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    ComprehensiveSR,
    ContainerContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    ImageContentItem,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    NumContentItem,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    ReferencedSegmentationFrame,
    RelationshipTypeValues,
    SourceImageForMeasurementGroup,
    SourceImageForSegmentation,
    TextContentItem,
    TrackingIdentifier,
)
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
from cxr_core.writers.sr import (
    SOURCE,
    _modality,
    _segment_item,
    _Structure,
    _structures,
    _tracking_uid,
    device_observer_uid,
)

GroupType = MeasurementsAndQualitativeEvaluations | PlanarROIMeasurementsAndQualitativeEvaluations


def build_sr_highdicom(source: pydicom.Dataset, analysis: Analysis, *,
             seg: pydicom.Dataset | None = None, entropy: Sequence[str] = ()) -> ComprehensiveSR:
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
    """
    source = source_for_derivation(source, analysis.radiograph.spacing)
    algorithm = analysis.algorithm or MANUFACTURER
    source_uid = str(source.SOPInstanceUID)
    basis = (source_uid, algorithm, *entropy)  # what the group tracking UIDs derive from
    groups: list[GroupType] = [
        _structure_group(structure, analysis, source, seg, basis)
        for structure in _structures(analysis)]
    groups.append(_relations_group(analysis, source, basis))
    groups += [_finding_group(f, source, f.model_id or algorithm, basis)
               for f in analysis.findings]
    report = MeasurementReport(
        observation_context=_observation_context(analysis.models),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    _insert_image_library(report, source)
    evidence = [source] + ([seg] if seg is not None else [])
    with quiet_person_name_warnings():
        return ComprehensiveSR(
            evidence=evidence,
            content=report,
            series_instance_uid=derived_uid(source_uid, "sr-series", algorithm, *entropy),
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=derived_uid(source_uid, "sr", algorithm, *entropy),
            instance_number=1,
            manufacturer=MANUFACTURER,
            is_complete=True,
            performed_procedure_codes=[PLAIN_CHEST_XRAY],
            series_description="SlicerCXR AI results (not verified)",
        )


def _observation_context(models: Sequence[ModelRef]) -> ObservationContext:
    """One Device observer (TID 1002/1004) per model, in the order the engine ran them;
    SlicerCXR itself when no model is recorded."""
    model_ids = [model.id for model in models] or [f"{MANUFACTURER}@{software_version()}"]
    devices = [_device(model_id) for model_id in model_ids]
    context = ObservationContext(observer_device_context=devices[0])
    for device in devices[1:]:
        context.extend(device)
    return context


def _device(model_id: str) -> ObserverContext:
    name = model_id.partition("@")[0]
    return ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=device_observer_uid(model_id), name=name[:64],
            manufacturer_name=MANUFACTURER, model_name=model_id[:64]))


def _algorithm_id(algorithm: str) -> AlgorithmIdentification:
    name, _, version = algorithm.partition("@")
    return AlgorithmIdentification(name=name[:64], version=version or software_version())


def _source_images(source: pydicom.Dataset) -> list[SourceImageForMeasurementGroup]:
    return [SourceImageForMeasurementGroup.from_source_image(source)]


# ------------------------------------------------------------------- image library
def _insert_image_library(report: MeasurementReport, source: pydicom.Dataset) -> None:
    """TID 1600 Image Library with the source image, at its place in TID 1500 (row 5,
    before Imaging Measurements). highdicom's own builder insists on Imager Pixel Spacing
    and Patient Orientation for a CR/DX, which TID 1603 does not require."""
    entry = ImageContentItem(
        name=SOURCE, referenced_sop_class_uid=str(source.SOPClassUID),
        referenced_sop_instance_uid=str(source.SOPInstanceUID),
        relationship_type=RelationshipTypeValues.CONTAINS)
    entry.ContentSequence = ContentSequence(_library_descriptors(source))
    group = ContainerContentItem(name=codes.DCM.ImageLibraryGroup,
                                 relationship_type=RelationshipTypeValues.CONTAINS)
    group.ContentSequence = ContentSequence([entry])
    library = ContainerContentItem(name=codes.DCM.ImageLibrary,
                                   relationship_type=RelationshipTypeValues.CONTAINS)
    library.ContentSequence = ContentSequence([group])
    items = report[0].ContentSequence
    measurements = next(i for i, item in enumerate(items)
                        if item.ConceptNameCodeSequence[0].CodeValue == "126010")
    items.insert(measurements, library)


def _library_descriptors(source: pydicom.Dataset) -> list[hd.sr.ContentItem]:
    """TID 1602 (modality, size) and what TID 1603 describes of a projection image that
    the source states: its Patient Orientation and Imager Pixel Spacing."""
    context = RelationshipTypeValues.HAS_ACQ_CONTEXT
    pixels = Code("{pixels}", "UCUM", "Pixels")
    items: list[hd.sr.ContentItem] = [
        CodeContentItem(name=codes.DCM.Modality, value=_modality(source),
                        relationship_type=context),
        NumContentItem(name=codes.DCM.PixelDataRows, value=int(source.Rows), unit=pixels,
                       relationship_type=context),
        NumContentItem(name=codes.DCM.PixelDataColumns, value=int(source.Columns),
                       unit=pixels, relationship_type=context)]
    orientation = list(source.get("PatientOrientation") or [])
    if len(orientation) == 2 and all(orientation):
        items += [TextContentItem(name=codes.DCM.PatientOrientationRow, value=orientation[0],
                                  relationship_type=context),
                  TextContentItem(name=codes.DCM.PatientOrientationColumn,
                                  value=orientation[1], relationship_type=context)]
    spacing = list(source.get("ImagerPixelSpacing") or [])
    if len(spacing) == 2 and all(float(v) > 0 for v in spacing):
        items += [NumContentItem(name=codes.DCM.HorizontalPixelSpacing, value=float(spacing[1]),
                                 unit=codes.UCUM.Millimeter, relationship_type=context),
                  NumContentItem(name=codes.DCM.VerticalPixelSpacing, value=float(spacing[0]),
                                 unit=codes.UCUM.Millimeter, relationship_type=context)]
    return items


# ---------------------------------------------------------------------- structures
def _finding_and_site(kind: SegmentType, laterality: Code | None) -> tuple[Code, FindingSite]:
    """An anatomical structure is its own site; a finding segment (a pneumothorax) lies at
    the Lung on its side (the engine assigns each of its regions to the nearer lung)."""
    site = kind.property_type if kind.category == ANATOMICAL_STRUCTURE else LUNG
    return kind.property_type, FindingSite(site, laterality=laterality)


def _structure_group(structure: _Structure, analysis: Analysis, source: pydicom.Dataset,
                     seg: pydicom.Dataset | None, basis: Sequence[str]) -> GroupType:
    kind = SEGMENT_TYPES[structure.segment]
    finding, site = _finding_and_site(kind, structure.laterality)
    side = f" ({structure.laterality.meaning.lower()})" if (
        structure.laterality is not None and kind.modifier is None) else ""
    segment = analysis.segments[structure.segment]
    common: dict[str, Any] = {  # what both group templates share
        "tracking_identifier": TrackingIdentifier(
            uid=_tracking_uid(structure, seg, basis), identifier=f"{kind.label}{side}"),
        "algorithm_id": _algorithm_id(segment.model_id or analysis.algorithm or MANUFACTURER),
        "finding_category": kind.category,
        "finding_type": finding,
        "finding_sites": [site],
        "measurements": [_measurement(m) for m in structure.measurements],
    }
    if seg is None:
        return MeasurementsAndQualitativeEvaluations(source_images=_source_images(source),
                                                     **common)
    group = PlanarROIMeasurementsAndQualitativeEvaluations(
        referenced_segment=_segment_frame(seg, source, kind.label), **common)
    _drop_segment_number(group)
    return group


def _segment_frame(seg: pydicom.Dataset, source: pydicom.Dataset,
                   label: str) -> ReferencedSegmentationFrame:
    """The SEG frame holding segment ``label`` (one source image: one frame a segment)."""
    item = _segment_item(seg, label)
    if item is None:
        raise ValueError(f"seg: no segment labelled {label!r}")
    number = int(item.SegmentNumber)
    frame = next(index for index, group in enumerate(seg.PerFrameFunctionalGroupsSequence, 1)
                 if int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == number)
    return ReferencedSegmentationFrame(
        sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID),
        frame_number=frame, segment_number=number,
        source_image=SourceImageForSegmentation.from_source_image(source))


def _drop_segment_number(group: PlanarROIMeasurementsAndQualitativeEvaluations) -> None:
    """PS3.3 Table 10-3: Referenced Segment Number is required only when Referenced Frame
    Number is not present (dciodvfy: "Shall not be present when ReferencedFrameNumber is
    present"); the frame identifies the segment (its Segment Identification)."""
    for item in group[0].ContentSequence:
        if item.ValueType != "IMAGE":
            continue
        for reference in item.ReferencedSOPSequence:
            if "ReferencedFrameNumber" in reference and "ReferencedSegmentNumber" in reference:
                del reference.ReferencedSegmentNumber


def _measurement(measurement: EngineMeasurement) -> Measurement:
    return Measurement(name=measurement.concept, value=measurement.value,
                       unit=UNITS[measurement.unit], method=measurement.method)


def _relations_group(analysis: Analysis, source: pydicom.Dataset,
                     basis: Sequence[str]) -> MeasurementsAndQualitativeEvaluations:
    """Measurements between structures (no site of their own: ratios), and the note on
    what the area units mean for this image."""
    measurements = [_measurement(m) for m in analysis.measurements
                    if m.site is None and m.unit in UNITS]
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=derived_uid(basis, "anatomy"),
            identifier="Lungs and heart"),
        algorithm_id=_algorithm_id(analysis.mask_models.split(", ")[0] or analysis.algorithm
                                   or MANUFACTURER),
        measurements=measurements or None,
        source_images=_source_images(source),
    )
    spacing = analysis.radiograph.spacing
    note = (f"Areas in mm2 from {spacing.source.value}." if spacing.trusted else
            f"Pixel spacing is {spacing.source.value}: areas are pixel counts, not mm2; "
            "ratios are spacing-independent.")
    if analysis.quality_flags:
        note += " Quality flags: " + ", ".join(analysis.quality_flags) + "."
    _append_comment(group, note)
    return group


# ------------------------------------------------------------------------ findings
def _finding_group(finding: Finding, source: pydicom.Dataset, algorithm: str,
                   basis: Sequence[str]) -> MeasurementsAndQualitativeEvaluations:
    """Present/Absent and the probability; a comment when a rule, not the probability
    against its threshold, decided (a reader would otherwise see "Probability 0.97 ...
    Absent" as a contradiction)."""
    concept = finding.code
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=derived_uid(basis, "finding", finding.name),
            identifier=f"Finding: {finding.name}"),
        algorithm_id=_algorithm_id(algorithm),
        finding_type=concept,
        measurements=[Measurement(name=PROBABILITY, value=round(finding.probability, 4),
                                  unit=UNITS["1"])],
        qualitative_evaluations=[
            QualitativeEvaluation(concept, PRESENT if finding.positive else ABSENT)],
        finding_sites=_zone_sites(finding),
        source_images=_source_images(source),
    )
    if finding.note:
        _append_comment(group, finding.note)
    return group


def _zone_sites(finding: Finding) -> list[FindingSite] | None:
    """Finding Site per lung zone of a positive finding, most first: the zone's SNOMED
    code with the patient side as its laterality (:data:`~cxr_core.terminology.LUNG_ZONES`)."""
    if not finding.positive or not finding.zones:
        return None
    return [FindingSite(LUNG_ZONES[zone.level], laterality=SIDES[zone.side])
            for zone in finding.zones]


def _append_comment(group: GroupType, text: str) -> None:
    item = TextContentItem(name=COMMENT, value=text[:1024],
                           relationship_type=RelationshipTypeValues.CONTAINS)
    group[0].ContentSequence.append(item)
