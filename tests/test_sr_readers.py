"""Our TID 1500 SR through the readers people use (issue 13, IHE AI Results): dciodvfy,
PixelMed DicomSRValidator, highdicom srread, dcmqi tid1500reader and dcmjs read the way
OHIF 3's SR handler reads it; on the SR of every shared chest DICOM sample plus a
pneumothorax-positive case.

Each external tool runs once for all SRs, in session fixtures. A reader failure is accepted
only when it matches :data:`ALLOWED`, with the reason it is the reader's bug (against
PS3.16's text).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from cxr_core import Analysis, Finding, build_dicom_results, read_radiograph
from cxr_core.measure import make_segment
from cxr_core.stages.pneumothorax import side_measurements
from cxr_core.terminology import (
    IMAGING_PROCEDURE,
    LUNG,
    PLAIN_CHEST_XRAY,
    PNEUMOTHORAX,
    PRESENT,
    SEGMENT_TYPES,
)
from cxr_core.writers.sr import device_observer_uid
from tests.conftest import DICOM_SAMPLES, REPO, dciodvfy_errors, dsrdump, require_tool
from tests.test_seg_readers import JDK17_XPATH_LIMITS, PIXELMED_JARS, _chest_samples

JS = REPO / "tests" / "js"
MIXED_TEMPLATES = (
    "PS3.16 TID 1500 rows 7-9 let Imaging Measurements hold TID 1410, TID 1411 and TID "
    "1501 groups side by side; PixelMed 20220618 (DicomSRDescriptionsCompiled.xsl) picks "
    "one template for all groups: TID 1410 as soon as any group has a Referenced "
    "Segmentation Frame, so our image-level TID 1501 groups (findings, ratios) are checked "
    "as TID 1410 and miss its region rows.")
ALLOWED: dict[str, dict[str, str]] = {
    "pixelmed": {
        r"Error: Template 1004 DeviceObserverIdentifyingAttributes/\[Row \d\] \w+ \(12101\d,DCM,"
        r"\"Device Observer [\w ]+\"\): within 1: /CONTAINER \(126000,DCM,\"Imaging Measurement "
        r"Report\"\): Incorrect content item value multiplicity - found \d content items but "
        r"expected 1":
            "PS3.16 TID 1001 row 1 includes TID 1002 Observer Context with VM 1-n: one Device "
            "observer per model (IHE AIR). PixelMed counts TID 1004's rows over the whole "
            "root container instead of per included observer.",
        r"Error: Template 1410 PlanarROIMeasurements/\[Row 1\] CONTAINER \(125007,DCM,"
        r"\"Measurement Group\"\)/\[Row [57]\] \w+ \((111030|121214),DCM,\"(Image Region|"
        r"Referenced Segmentation Frame)\"\): within [\d.]+: .*: Missing conditional content "
        r"item": MIXED_TEMPLATES,
    },
}


@dataclass
class SrCase:
    """One SR (and the SEG it cites) written from real engine output."""

    analysis: Analysis
    sr_path: Path
    sr: pydicom.Dataset
    seg: pydicom.Dataset


def _with_pneumothorax(analysis: Analysis) -> Analysis:
    """The analysis with a synthetic, positive pneumothorax: the lateral fifth of the right
    lung's upper third (its extent in those rows), measured by the engine's own
    side_measurements (how the interop review exercised this path; not model output)."""
    lung = analysis.segments["right_lung"].mask
    rows = np.flatnonzero(lung.any(axis=1))
    upper = np.zeros_like(lung)
    upper[rows[0]:rows[0] + (rows[-1] - rows[0]) // 3] = True
    columns = np.flatnonzero((lung & upper).any(axis=0))
    lateral = np.zeros_like(lung)
    lateral[:, columns[0]:columns[0] + max(1, (columns[-1] - columns[0]) // 5)] = True
    mask = lung & upper & lateral
    spacing = analysis.radiograph.spacing
    model = next(m.id for m in analysis.models if m.id.startswith("pneumothorax@"))
    segments = {**analysis.segments,
                "pneumothorax": make_segment("pneumothorax", mask, spacing, model)}
    findings = [dataclasses.replace(f, positive=True, note=None) if f.name == "pneumothorax"
                else f for f in analysis.findings]
    measurements = analysis.measurements + side_measurements(mask, segments, spacing)
    return dataclasses.replace(analysis, segments=segments, findings=findings,
                               measurements=measurements)


def _write(analysis: Analysis, folder: Path, name: str) -> SrCase:
    results = build_dicom_results(analysis.radiograph.source_dataset, analysis)
    path = folder / f"{name}_sr.dcm"
    results.sr.save_as(path, enforce_file_format=True)
    return SrCase(analysis=analysis, sr_path=path, sr=pydicom.dcmread(path), seg=results.seg)


@pytest.fixture(scope="session")
def sr_cases(engine, tmp_path_factory) -> dict[str, SrCase]:  # noqa: ANN001
    """Every chest sample's SR, and ``ptx`` (siim with a synthetic pneumothorax)."""
    folder = tmp_path_factory.mktemp("srs")
    analyses = {path.stem: engine.analyze(read_radiograph(path)) for path in _chest_samples()}
    cases = {name: _write(analysis, folder, name) for name, analysis in analyses.items()}
    siim = next(name for name in analyses if name.startswith("siim_"))
    cases["ptx"] = _write(_with_pneumothorax(analyses[siim]), folder, "ptx")
    return cases


def _allowed(line: str, reader: str) -> bool:
    return any(re.fullmatch(pattern, line) for pattern in ALLOWED[reader])


@pytest.fixture(scope="session")
def pixelmed_sr(sr_cases) -> dict[str, list[str]]:  # noqa: ANN001
    """PixelMed DicomSRValidator's Error lines per case (one JVM for all)."""
    java = require_tool("java")
    paths = [str(case.sr_path) for case in sr_cases.values()]
    result = subprocess.run(
        [java, *JDK17_XPATH_LIMITS, "-cp", ":".join(PIXELMED_JARS),
         str(REPO / "tests" / "java" / "ValidateSR.java"), *paths],
        capture_output=True, text=True, check=True, timeout=600)
    reports: dict[str, list[str]] = {}
    current: list[str] = []
    for line in result.stdout.splitlines():
        if line.startswith("=== "):
            current = reports.setdefault(line[4:].strip(), [])
        elif line.startswith(("Error", "Found", "IOD validation")):
            current.append(line.strip())
    return {name: reports[str(case.sr_path)] for name, case in sr_cases.items()}


def test_dciodvfy_reports_no_error(sr_cases) -> None:  # noqa: ANN001
    for name, case in sr_cases.items():
        assert dciodvfy_errors(case.sr_path) == [], name


def test_pixelmed_finds_tid_1500_and_only_its_own_rule_defects(pixelmed_sr) -> None:  # noqa: ANN001
    for name, lines in pixelmed_sr.items():
        assert "Found Root Template TID_1500 (MeasurementReport)" in lines, name
        assert "IOD validation complete" in lines, name
        errors = [line for line in lines if line.startswith("Error")]
        assert [e for e in errors if not _allowed(e, "pixelmed")] == [], name
        assert not any("context group 100" in e for e in errors), name


def test_highdicom_reads_groups_sites_and_segments(sr_cases) -> None:  # noqa: ANN001
    for name, case in sr_cases.items():
        content = hd.sr.srread(case.sr_path).content
        planar = content.get_planar_roi_measurement_groups()
        segments = {item.SegmentLabel: item for item in case.seg.SegmentSequence}
        for group in planar:
            frame = group.referenced_segmentation_frame
            assert frame is not None, name
            assert frame[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
                case.seg.SOPInstanceUID)
            number = int(frame[0].ReferencedSOPSequence[0].ReferencedFrameNumber)
            label = next(lb for lb, item in segments.items() if int(item.SegmentNumber) == int(
                case.seg.PerFrameFunctionalGroupsSequence[number - 1]
                .SegmentIdentificationSequence[0].ReferencedSegmentNumber))
            (site,) = group.finding_sites
            kind = next(k for k in SEGMENT_TYPES.values() if k.label == label)
            assert group.finding_type == kind.property_type, (name, label)
            if kind.modifier is not None:
                assert (site.value, site.laterality) == (LUNG, kind.modifier), (name, label)
            assert group.get_measurements(), (name, label)
        assert {str(g.tracking_identifier) for g in planar} >= {"Right lung", "Left lung"}, name
        findings = {g.finding_type.value: g for g in content.get_image_measurement_groups()
                    if g.finding_type is not None}
        for finding in case.analysis.findings:
            assert finding.code.value in findings, (name, finding.name)


def test_pneumothorax_is_the_finding_and_the_lung_its_site(sr_cases) -> None:  # noqa: ANN001
    case = sr_cases["ptx"]
    content = hd.sr.srread(case.sr_path).content
    groups = [g for g in content.get_planar_roi_measurement_groups()
              if g.finding_type is not None and g.finding_type == PNEUMOTHORAX]
    assert groups
    for group in groups:
        (site,) = group.finding_sites
        assert site.value == LUNG and site.laterality is not None
        names = {m.name.meaning for m in group.get_measurements()}
        assert "Area" in names and "Pneumothorax percentage of hemithorax" in names
    finding = next(g for g in content.get_image_measurement_groups()
                   if g.finding_type is not None and g.finding_type == PNEUMOTHORAX)
    assert finding.get_qualitative_evaluations()[0].value == PRESENT
    text = dsrdump(case.sr_path)
    assert 'Finding Site")=(36118008' not in text  # never a finding site


def test_root_context_image_library_and_procedure(sr_cases) -> None:  # noqa: ANN001
    for name, case in sr_cases.items():
        report = hd.sr.srread(case.sr_path).content
        devices = report.get_observer_contexts()
        uids = [d.observer_identifying_attributes.uid for d in devices]
        assert uids == [device_observer_uid(m.id) for m in case.analysis.models], name
        procedure = report[0].ContentSequence
        reported = next(i for i in procedure if i.ConceptNameCodeSequence[0].CodeValue == "121058")
        assert reported.ConceptCodeSequence[0].CodeValue == IMAGING_PROCEDURE.value
        assert case.sr.PerformedProcedureCodeSequence[0].CodeValue == PLAIN_CHEST_XRAY.value
        assert case.seg.SOPInstanceUID in {
            item.ReferencedSOPInstanceUID
            for study in case.sr.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence}
    assert device_observer_uid("lung_seg@1.0.0") != device_observer_uid("lung_seg@1.0.1")


def test_dcmqi_keeps_each_groups_finding_site_and_laterality(sr_cases, tmp_path) -> None:  # noqa: ANN001
    reader = REPO / ".venv" / "bin" / "tid1500reader"
    if not reader.is_file():
        pytest.fail("dcmqi is not installed; run scripts/install.sh --test")
    for name, case in sr_cases.items():
        out = tmp_path / f"{name}.json"
        subprocess.run([str(reader), "--inputDICOM", str(case.sr_path), "--outputMetadata",
                        str(out)], capture_output=True, text=True, check=True, timeout=120)
        groups = {g["TrackingIdentifier"]: g for g in json.loads(out.read_text())["Measurements"]}
        for label, side in (("Right lung", "24028007"), ("Left lung", "7771000")):
            assert groups[label]["FindingSite"]["CodeValue"] == LUNG.value, name
            assert groups[label]["Laterality"]["CodeValue"] == side, name


def test_ohif_reads_the_image_library(sr_cases) -> None:  # noqa: ANN001
    node = require_tool("node")
    if not (JS / "node_modules" / "dcmjs").is_dir():
        pytest.fail("tests/js has no node_modules; run scripts/install.sh --test")
    paths = [str(case.sr_path) for case in sr_cases.values()]
    result = subprocess.run([node, "read_sr.mjs", *paths], cwd=JS, capture_output=True,
                            text=True, check=True, timeout=120)
    read = {item["file"]: item for item in map(json.loads, result.stdout.splitlines())}
    for name, case in sr_cases.items():
        source = case.analysis.radiograph.source_dataset
        assert read[str(case.sr_path)].get("images") == [
            {"sopClassUID": source.SOPClassUID, "sopInstanceUID": source.SOPInstanceUID}], name


def test_findings_come_from_the_analysis(sr_cases) -> None:  # noqa: ANN001
    """Finding groups follow the analysis' findings, whatever labels the classifier has."""
    case = sr_cases[next(iter(sr_cases))]
    extra = Finding("effusion", pydicom.sr.coding.Code("60046008", "SCT", "Pleural effusion"),
                    0.3, 0.5, False, model_id="findings@9.9.9")
    analysis = dataclasses.replace(case.analysis, findings=[*case.analysis.findings, extra])
    sr = build_dicom_results(analysis.radiograph.source_dataset, analysis).sr
    assert "60046008" in {item.ConceptCodeSequence[0].CodeValue
                          for group in sr.ContentSequence[-1].ContentSequence
                          for item in group.ContentSequence
                          if item.ConceptNameCodeSequence[0].CodeValue == "121071"}
    assert DICOM_SAMPLES.is_dir()
