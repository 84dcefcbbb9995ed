"""Comprehensive SR with TID 1500 (highdicom): image-level TID 1501 groups.

One group holds the anatomy measurements (areas, right/left ratio, cardiothoracic ratio);
each finding gets its own group with a qualitative Present/Absent, a probability NUM,
for a positive finding the lung zones its heat map lies in (Finding Site with laterality)
and, when a decision rule overrode the probability, a Comment saying which.
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

from cxr_core.analysis import Analysis, Finding
from cxr_core.analysis import Measurement as EngineMeasurement
from cxr_core.terminology import (
    ABSENT,
    COMMENT,
    LUNG_ZONES,
    PLAIN_CHEST_XRAY,
    PRESENT,
    PROBABILITY,
    SIDES,
    UNITS,
)
from cxr_core.writers.derivation import (
    derived_uid,
    quiet_person_name_warnings,
    source_for_derivation,
)
from cxr_core.writers.identity import MANUFACTURER, SR_SERIES_NUMBER, software_version


def build_sr(source: pydicom.Dataset, analysis: Analysis, *,
             seg: pydicom.Dataset | None = None, entropy: Sequence[str] = ()) -> ComprehensiveSR:
    """Build the TID 1500 report of ``analysis`` for its DICOM ``source`` image (and its
    SEG as evidence)."""
    source = source_for_derivation(source, analysis.radiograph.spacing)
    algorithm = analysis.algorithm or MANUFACTURER
    source_uid = str(source.SOPInstanceUID)
    groups = [_anatomy_group(analysis, source, analysis.mask_models.split(", ")[0] or algorithm)]
    groups += [_finding_group(f, source, f.model_id or algorithm) for f in analysis.findings]
    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=derived_uid("SlicerCXR device", software_version()), name=MANUFACTURER,
            manufacturer_name=MANUFACTURER, model_name=algorithm[:64]),
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
            manufacturer=MANUFACTURER,
            is_complete=True,
            performed_procedure_codes=[PLAIN_CHEST_XRAY],
            series_description="SlicerCXR AI results (not verified)",
        )


def _source_images(source: pydicom.Dataset) -> list[SourceImageForMeasurementGroup]:
    return [SourceImageForMeasurementGroup.from_source_image(source)]


def _algorithm_id(algorithm: str) -> AlgorithmIdentification:
    name, _, version = algorithm.partition("@")
    return AlgorithmIdentification(name=name[:64], version=version or software_version())


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
    site = (FindingSite(measurement.site, laterality=measurement.laterality)
            if measurement.site is not None else None)
    return Measurement(name=measurement.concept, value=measurement.value,
                       unit=UNITS[measurement.unit], finding_sites=[site] if site else None)


def _finding_group(finding: Finding, source: pydicom.Dataset,
                   algorithm: str) -> MeasurementsAndQualitativeEvaluations:
    """Present/Absent and the probability; a comment when a rule, not the probability
    against its threshold, decided (a reader would otherwise see "Probability 0.97 ...
    Absent" as a contradiction)."""
    concept = finding.code
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=derived_uid(str(source.SOPInstanceUID), "finding", finding.name),
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


def _append_comment(group: MeasurementsAndQualitativeEvaluations, text: str) -> None:
    item = TextContentItem(name=COMMENT, value=text[:1024],
                           relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    group[0].ContentSequence.append(item)



