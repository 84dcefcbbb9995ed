"""Comprehensive SR with TID 1500 (highdicom): image-level TID 1501 groups.

One group holds the anatomy measurements (areas, right/left ratio, cardiothoracic ratio);
each finding gets its own group with a qualitative Present/Absent and a probability NUM.
Areas are in mm² only when the spacing is trustworthy; otherwise they are pixel counts
(UCUM ``{pixels}``) and a comment in the group says why.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import pydicom
from highdicom.sr import (
    AlgorithmIdentification,
    ComprehensiveSR,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

import cxr_core
from cxr_core.analysis import Analysis, Finding
from cxr_core.analysis import Measurement as EngineMeasurement
from cxr_core.segments import LEFT, PNEUMOTHORAX, RIGHT, SEGMENT_TYPES
from cxr_core.writers.derivation import (
    derived_uid,
    quiet_person_name_warnings,
    source_for_derivation,
)

SR_SERIES_NUMBER = 902
PLAIN_CHEST_XRAY = Code("399208008", "SCT", "Plain chest X-ray")
AREA = Code("42798000", "SCT", "Area")
PROBABILITY = Code("122157", "DCM", "Probability")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")
COMMENT = Code("121106", "DCM", "Comment")
RATIO_UNIT = Code("1", "UCUM", "no units")
# No standard code was found for these two; a private scheme says so honestly.
PRIVATE_SCHEME = "99SLCXR"
CARDIOTHORACIC_RATIO = Code("CTR", PRIVATE_SCHEME, "Cardiothoracic ratio")
LUNG_AREA_RATIO = Code("RLAR", PRIVATE_SCHEME, "Right to left lung area ratio")
PNEUMOTHORAX_HEMITHORAX_PERCENT = Code("PTXHEMI", PRIVATE_SCHEME,
                                       "Pneumothorax percentage of hemithorax")
UNITS = {
    "mm2": Code("mm2", "UCUM", "square millimeter"),
    "{pixels}": Code("{pixels}", "UCUM", "pixels"),
    "1": RATIO_UNIT,
    "%": Code("%", "UCUM", "Percent"),
}


def build_sr(analysis: Analysis, *, seg: pydicom.Dataset | None = None,
             entropy: Sequence[str] = ()) -> ComprehensiveSR:
    """Build the TID 1500 report for one DICOM radiograph (and its SEG as evidence)."""
    source = analysis.radiograph.source_dataset
    if source is None:
        raise ValueError("analysis: an SR needs a DICOM source image; this one is an image file")
    source = source_for_derivation(source)
    algorithm = ", ".join(m["id"] for m in analysis.models) or "SlicerCXR"
    source_uid = str(source.SOPInstanceUID)
    groups = [_anatomy_group(analysis, source, algorithm)]
    groups += [_finding_group(f, source, f.model_id or algorithm) for f in analysis.findings]
    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=derived_uid("SlicerCXR device", cxr_core.__version__), name="SlicerCXR",
            manufacturer_name="SlicerCXR", model_name=algorithm[:64]),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device),
        procedure_reported=PLAIN_CHEST_XRAY,
        imaging_measurements=groups,
    )
    evidence = [source] + ([seg] if seg is not None else [])
    with quiet_person_name_warnings():
        return ComprehensiveSR(
            evidence=evidence,
            content=report,
            series_instance_uid=derived_uid(source_uid, "sr-series", algorithm, *entropy),
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=derived_uid(source_uid, "sr", algorithm, *entropy),
            instance_number=1,
            manufacturer="SlicerCXR",
            is_complete=True,
            performed_procedure_codes=[PLAIN_CHEST_XRAY],
            series_description="SlicerCXR AI results (not verified)",
        )


def _source_images(source: pydicom.Dataset) -> list[SourceImageForMeasurementGroup]:
    return [SourceImageForMeasurementGroup.from_source_image(source)]


def _algorithm_id(algorithm: str) -> AlgorithmIdentification:
    name, _, version = algorithm.partition("@")
    return AlgorithmIdentification(name=name[:64], version=version or cxr_core.__version__)


def _anatomy_group(analysis: Analysis, source: pydicom.Dataset,
                   algorithm: str) -> MeasurementsAndQualitativeEvaluations:
    measurements = [_measurement(m) for m in analysis.measurements if m.unit in UNITS]
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=derived_uid(str(source.SOPInstanceUID), "anatomy"),
            identifier="Lungs and heart"),
        algorithm_id=_algorithm_id(algorithm),
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


def _measurement(measurement: EngineMeasurement) -> Measurement:
    name, site = _measurement_concept(measurement.name)
    return Measurement(name=name, value=measurement.value, unit=UNITS[measurement.unit],
                       finding_sites=[site] if site else None)


def _measurement_concept(name: str) -> tuple[Code, FindingSite | None]:
    if name == "cardiothoracic_ratio":
        return CARDIOTHORACIC_RATIO, None
    if name == "right_to_left_lung_area_ratio":
        return LUNG_AREA_RATIO, None
    if name.startswith("pneumothorax_"):
        return _pneumothorax_concept(name)
    segment = SEGMENT_TYPES.get(name.removesuffix("_area"))
    if segment is None:
        raise ValueError(f"measurement: no SR concept for {name!r}")
    return AREA, FindingSite(segment.property_type, laterality=segment.modifier)


def _pneumothorax_concept(name: str) -> tuple[Code, FindingSite]:
    """``pneumothorax_<right|left>_area`` / ``..._hemithorax_percent``: the side is the
    finding site's laterality."""
    _, side, quantity = name.split("_", 2)
    laterality = {"right": RIGHT, "left": LEFT}.get(side)
    concepts = {"area": AREA, "hemithorax_percent": PNEUMOTHORAX_HEMITHORAX_PERCENT}
    if laterality is None or quantity not in concepts:
        raise ValueError(f"measurement: no SR concept for {name!r}")
    return concepts[quantity], FindingSite(PNEUMOTHORAX, laterality=laterality)


def _finding_group(finding: Finding, source: pydicom.Dataset,
                   algorithm: str) -> MeasurementsAndQualitativeEvaluations:
    concept = Code(*finding.code)
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=derived_uid(str(source.SOPInstanceUID), "finding", finding.name),
            identifier=f"Finding: {finding.name}"),
        algorithm_id=_algorithm_id(algorithm),
        finding_type=concept,
        measurements=[Measurement(name=PROBABILITY, value=round(finding.probability, 4),
                                  unit=RATIO_UNIT)],
        qualitative_evaluations=[
            QualitativeEvaluation(concept, PRESENT if finding.positive else ABSENT)],
        source_images=_source_images(source),
    )


def _append_comment(group: MeasurementsAndQualitativeEvaluations, text: str) -> None:
    item = TextContentItem(name=COMMENT, value=text[:1024],
                           relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    group[0].ContentSequence.append(item)



