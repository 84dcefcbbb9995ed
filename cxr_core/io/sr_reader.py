"""Read a SlicerCXR TID 1500 SR back: its source image, SEG, models and measurements.

A worklist over a DICOM database (Slicer's) finds analysed radiographs by our SRs, and
orders them by the mask agreement each SR carries (:mod:`cxr_core.mask_quality`); this
reader gives it what it needs without the engine (plain pydicom, no torch). It walks the
content tree as :mod:`cxr_core.writers.sr` writes it: one Measurement Group per
structure, its Finding and Finding Site (with laterality) naming the segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from cxr_core.io.errors import RefusedInput
from cxr_core.io.seg_reader import SEG_SOP_CLASS
from cxr_core.mask_quality import REVIEW_SEGMENTS
from cxr_core.terminology import MASK_AGREEMENT, segment_type_for_codes
from cxr_core.writers.identity import is_own_output

SR_MODALITY = "SR"
MEASUREMENT_GROUP = "125007"
FINDING = "121071"
FINDING_SITE = "363698007"
LATERALITY = "272741003"
TRACKING_IDENTIFIER = "112039"
DEVICE_OBSERVER_MODEL = "121015"
MEASUREMENT_METHOD = "370129005"


@dataclass
class SrMeasurement:
    """One NUM of a measurement group."""

    group: str
    """The group's Tracking Identifier (``Right lung``, ``Finding: abnormal``...)."""
    segment: str | None
    """Our segment name when the group is a segmented structure."""
    code: str
    """The concept's code value (``MASKAGREE``...)."""
    meaning: str
    value: float
    unit: str
    method: str = ""
    """The Measurement Method's meaning, when the SR gives one."""


@dataclass
class SrContent:
    """What a worklist needs from one of our SRs."""

    sop_instance_uid: str
    source_sop_instance_uid: str | None
    """The radiograph it reports on."""
    seg_sop_instance_uid: str | None
    """The SEG its groups reference, when it has one."""
    content_datetime: str
    """``ContentDate`` + ``ContentTime`` (sorts in time order)."""
    models: list[str] = field(default_factory=list)
    """``name@version`` of each model (Device Observer Model Name)."""
    measurements: list[SrMeasurement] = field(default_factory=list)

    @property
    def quality(self) -> dict[str, float]:
        """Mask agreement by segment name."""
        return {m.segment: m.value for m in self.measurements
                if m.code == MASK_AGREEMENT.value and m.segment is not None}

    @property
    def review_score(self) -> float | None:
        """The worst lung's mask agreement, as :attr:`cxr_core.Analysis.review_score`."""
        values = [value for name, value in self.quality.items() if name in REVIEW_SEGMENTS]
        return min(values) if values else None


def read_sr(path_or_dataset: Path | str | pydicom.Dataset) -> SrContent:
    """The source, SEG, models and measurements of an SR that SlicerCXR wrote.

    Raises
    ------
    RefusedInput
        When the file is not an SR or not one of ours.
    """
    sr = (path_or_dataset if isinstance(path_or_dataset, pydicom.Dataset)
          else pydicom.dcmread(path_or_dataset))
    if sr.get("Modality") != SR_MODALITY or "ContentSequence" not in sr:
        raise RefusedInput("not a DICOM Structured Report")
    if not is_own_output(sr):
        raise RefusedInput("not an SR written by SlicerCXR")
    evidence = _evidence(sr)
    return SrContent(
        sop_instance_uid=str(sr.SOPInstanceUID),
        source_sop_instance_uid=next((uid for uid, cls in evidence if cls != SEG_SOP_CLASS),
                                     None),
        seg_sop_instance_uid=next((uid for uid, cls in evidence if cls == SEG_SOP_CLASS), None),
        content_datetime=f"{sr.get('ContentDate', '')}{sr.get('ContentTime', '')}",
        models=[str(item.TextValue) for item in sr.ContentSequence
                if _code(item) == DEVICE_OBSERVER_MODEL],
        measurements=[m for group in _groups(sr.ContentSequence) for m in _numbers(group)],
    )


def _evidence(sr: pydicom.Dataset) -> list[tuple[str, str]]:
    """(SOP Instance UID, SOP Class UID) of every instance the SR rests on."""
    return [(str(ref.ReferencedSOPInstanceUID), str(ref.ReferencedSOPClassUID))
            for study in sr.get("CurrentRequestedProcedureEvidenceSequence", [])
            for series in study.get("ReferencedSeriesSequence", [])
            for ref in series.get("ReferencedSOPSequence", [])]


def _code(item: pydicom.Dataset) -> str:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeValue) if names else ""


def _groups(items: pydicom.Sequence) -> list[pydicom.Dataset]:
    """Every Measurement Group container below ``items``."""
    found: list[pydicom.Dataset] = []
    for item in items:
        if item.get("ValueType") != "CONTAINER":
            continue
        if _code(item) == MEASUREMENT_GROUP:
            found.append(item)
        else:
            found += _groups(item.get("ContentSequence", []))
    return found


def _numbers(group: pydicom.Dataset) -> list[SrMeasurement]:
    items = group.get("ContentSequence", [])
    tracking = next((str(i.TextValue) for i in items if _code(i) == TRACKING_IDENTIFIER), "")
    segment = _segment(items)
    measurements = []
    for item in items:
        if item.get("ValueType") != "NUM" or not item.get("MeasuredValueSequence"):
            continue
        value = item.MeasuredValueSequence[0]
        methods = [m.ConceptCodeSequence[0].CodeMeaning for m in item.get("ContentSequence", [])
                   if _code(m) == MEASUREMENT_METHOD and m.get("ConceptCodeSequence")]
        measurements.append(SrMeasurement(
            group=tracking, segment=segment, code=_code(item),
            meaning=str(item.ConceptNameCodeSequence[0].CodeMeaning),
            value=float(value.NumericValue),
            unit=str(value.MeasurementUnitsCodeSequence[0].CodeValue),
            method=str(methods[0]) if methods else ""))
    return measurements


def _segment(items: pydicom.Sequence) -> str | None:
    """Our segment named by a group's Finding and its Finding Site's laterality."""
    finding = next((i for i in items if _code(i) == FINDING and i.get("ConceptCodeSequence")),
                   None)
    if finding is None:
        return None
    sites = [i for i in items if _code(i) == FINDING_SITE]
    sides = [str(m.ConceptCodeSequence[0].CodeValue) for site in sites[:1]
             for m in site.get("ContentSequence", []) if _code(m) == LATERALITY]
    type_value = str(finding.ConceptCodeSequence[0].CodeValue)
    kind = (segment_type_for_codes(type_value, sides[0] if sides else None)
            or segment_type_for_codes(type_value, None))
    return kind.name if kind is not None else None
