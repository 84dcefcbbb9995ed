"""The positive findings' heat maps as a FRACTIONAL SEG (issue 13 item 5), through the same
readers as the binary SEG (tests/test_seg_readers.py, whose runners and allowlists are
reused): dciodvfy, PixelMed, highdicom, GDCM and dcmjs; and its encoding and identity.

The heat maps are real engine output (class activation maps of the positive findings of
the shared samples). Should the retrained classifier find nothing positive in any sample,
the siim sample gets two positive findings with a synthetic map (a Gaussian blob; not
model output), so the writer is still exercised.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from cxr_core import OUTPUT_KINDS, Analysis, Finding, build_dicom_results, write_outputs
from tests.conftest import dciodvfy_errors, require_tool
from tests.test_seg_readers import (  # noqa: F401  (analyses: a fixture, used by name)
    ALLOWED,
    JDK17_XPATH_LIMITS,
    JS,
    PIXELMED_JARS,
    _js_request,
    _split_reports,
    analyses,
)

HEATMAP_SERIES_NUMBER = 904
ALLOWED_HEATMAP = {
    "cornerstone_adapters": {
        "Error: Fractional segmentations are not yet supported":
            "@cornerstonejs/adapters 5.14 (OHIF 3's SEG loader) refuses every FRACTIONAL "
            "SEG before reading it; PS3.3 C.8.20.2 defines FRACTIONAL (PROBABILITY, "
            "OCCUPANCY) beside BINARY. dcmjs parses the same file (frames, segments).",
    },
}


@dataclass
class HeatCase:
    """One heat-map SEG, with what it was written from."""

    seg_path: Path
    source: pydicom.Dataset
    seg: pydicom.Dataset
    binary_seg: pydicom.Dataset
    maps: dict[str, np.ndarray]
    """The heat maps (0..1) in segment order, by finding name."""
    models: dict[str, str]
    """``name@version`` of the model that made each finding."""
    real: bool
    """Engine output, not the synthetic fallback."""


def _positive(analysis: Analysis) -> list[Finding]:
    return [f for f in analysis.findings if f.positive and f.heatmap is not None]


def _with_synthetic_heatmaps(analysis: Analysis) -> Analysis:
    """The analysis with its first two findings positive, each with a Gaussian blob as its
    heat map (synthetic, not model output), credited to the findings model."""
    rows, columns = analysis.radiograph.pixels.shape[:2]
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    model = next(m.id for m in analysis.models if m.id.startswith("findings@"))
    findings = list(analysis.findings)
    for index, centre in zip(range(min(2, len(findings))), (0.3, 0.7), strict=False):
        blob = np.exp(-(((x - centre * columns) / (columns / 8)) ** 2
                        + ((y - rows / 2) / (rows / 6)) ** 2))
        findings[index] = dataclasses.replace(findings[index], positive=True,
                                              heatmap=blob.astype(np.float32), model_id=model)
    return dataclasses.replace(analysis, findings=findings)


def _write_case(analysis: Analysis, folder: Path, real: bool) -> HeatCase:
    source = analysis.radiograph.source_dataset
    results = build_dicom_results(source, analysis)
    assert results.heatmap_seg is not None
    path = folder / f"{len(list(folder.iterdir()))}_heatmap_seg.dcm"
    results.heatmap_seg.save_as(path, enforce_file_format=True)
    mapped = _positive(analysis)
    return HeatCase(seg_path=path, source=source, seg=pydicom.dcmread(path),
                    binary_seg=results.seg, maps={f.name: f.heatmap for f in mapped},
                    models={f.name: str(f.model_id) for f in mapped}, real=real)


@pytest.fixture(scope="session")
def heat_cases(analyses, tmp_path_factory) -> dict[str, HeatCase]:  # noqa: ANN001, F811
    """The heat-map SEG of every sample with a positive finding (or the synthetic one)."""
    folder = tmp_path_factory.mktemp("heatmap_segs")
    cases = {name: _write_case(analysis, folder, real=True)
             for name, analysis in analyses.items() if _positive(analysis)}
    if not cases:
        siim = next(name for name in analyses if name.startswith("siim_"))
        cases["synthetic"] = _write_case(_with_synthetic_heatmaps(analyses[siim]), folder,
                                         real=False)
    return cases


@pytest.fixture(scope="session")
def heat_pixelmed(heat_cases) -> dict[str, list[str]]:  # noqa: ANN001
    """PixelMed DicomInstanceValidator's Error lines per case (one JVM for all)."""
    java = require_tool("java")
    paths = [str(case.seg_path) for case in heat_cases.values()]
    result = subprocess.run(
        [java, *JDK17_XPATH_LIMITS, "-cp", ":".join(PIXELMED_JARS),
         str(JS.parent / "java" / "ValidateInstances.java"), *paths],
        capture_output=True, text=True, check=True, timeout=300)
    reports = _split_reports(result.stdout, "=== ")
    return {name: reports[str(case.seg_path)] for name, case in heat_cases.items()}


@pytest.fixture(scope="session")
def heat_js(heat_cases, tmp_path_factory) -> dict[str, dict]:  # noqa: ANN001
    """dcmjs and @cornerstonejs/adapters (OHIF 3's loader) on each heat-map SEG."""
    node = require_tool("node")
    out = tmp_path_factory.mktemp("heatmap_js")
    requests = [_js_request(name, case, out / name, None) for name, case in heat_cases.items()]
    request_file = out / "requests.json"
    request_file.write_text(json.dumps(requests))
    result = subprocess.run([node, "load_seg.mjs", str(request_file)], cwd=JS,
                            capture_output=True, text=True, check=True, timeout=300)
    loaded = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {item["name"]: item for item in loaded}


def test_dciodvfy_reports_no_error(heat_cases) -> None:  # noqa: ANN001
    for name, case in heat_cases.items():
        assert dciodvfy_errors(case.seg_path) == [], name


def test_pixelmed_reports_only_its_own_rule_defects(heat_pixelmed) -> None:  # noqa: ANN001
    """The binary SEG's allowlist, unchanged: FRACTIONAL adds no PixelMed message."""
    for name, errors in heat_pixelmed.items():
        assert [e for e in errors if e not in ALLOWED["pixelmed"]] == [], name


def test_highdicom_reads_our_maps_within_one_step(heat_cases) -> None:  # noqa: ANN001
    """segread rescales the stored 0..255 to 0..1: equal to ours within 1/255."""
    for name, case in heat_cases.items():
        seg = hd.seg.segread(case.seg_path)
        assert (seg.SegmentationType, seg.SegmentationFractionalType) == (
            "FRACTIONAL", "PROBABILITY"), name
        ((_, _, source_uid),) = seg.get_source_image_uids()
        assert source_uid == case.source.SOPInstanceUID, name
        pixels = seg.get_pixels_by_source_instance([source_uid], combine_segments=False)
        assert pixels.shape[-1] == len(case.maps), name
        for index, heatmap in enumerate(case.maps.values()):
            difference = np.abs(pixels[0, :, :, index].astype(np.float64) - heatmap)
            assert difference.max() <= 1 / 255 + 1e-6, name


def test_gdcm_reads_the_frames(heat_cases) -> None:  # noqa: ANN001
    gdcminfo = require_tool("gdcminfo")
    for name, case in heat_cases.items():
        result = subprocess.run([gdcminfo, str(case.seg_path)], capture_output=True,
                                text=True, check=False, timeout=60)
        assert result.returncode == 0, (name, result.stderr[-300:])
        size = f"Dimensions: ({case.seg.Columns},{case.seg.Rows},{len(case.maps)})"
        assert size in result.stdout, name


def test_dcmjs_parses_every_frame_and_segment(heat_cases, heat_js) -> None:  # noqa: ANN001
    """dcmjs reads it; OHIF 3's loader refuses FRACTIONAL SEGs (allowlisted, its limit)."""
    for name, case in heat_cases.items():
        loaded = heat_js[name]
        assert loaded["dcmjs"]["frames"] == len(case.maps), name
        labels = [str(item.SegmentLabel) for item in case.seg.SegmentSequence]
        assert loaded["dcmjs"]["segments"] == labels, name
        assert loaded["adapters"].get("error") in ALLOWED_HEATMAP["cornerstone_adapters"], name


def test_one_segment_per_positive_finding_credited_to_its_model(
        heat_cases, analyses) -> None:  # noqa: ANN001, F811
    for name, case in heat_cases.items():
        findings = {f.name: f for f in analyses.get(name, _synthetic(analyses)).findings}
        assert [str(item.TrackingID) for item in case.seg.SegmentSequence] == [
            f"{finding} heat map" for finding in case.maps], name
        for item, finding in zip(case.seg.SegmentSequence, case.maps, strict=True):
            code = findings[finding].code
            (property_type,) = item.SegmentedPropertyTypeCodeSequence
            assert (property_type.CodeValue, property_type.CodingSchemeDesignator) == (
                code.value, code.scheme_designator), name
            (algorithm,) = item.SegmentationAlgorithmIdentificationSequence
            model, version = case.models[finding].split("@")
            assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (model, version)
            assert item.SegmentAlgorithmType == "AUTOMATIC", name


def _synthetic(by_name: dict[str, Analysis]) -> Analysis:
    siim = next(name for name in by_name if name.startswith("siim_"))
    return _with_synthetic_heatmaps(by_name[siim])


def test_same_encoding_and_series_as_a_radiograph_seg(heat_cases) -> None:  # noqa: ANN001
    """No Frame of Reference, so no Pixel Measures / Plane Position / Plane Orientation;
    each frame names its source through Derivation Image; its own series."""
    for name, case in heat_cases.items():
        seg = case.seg
        assert "FrameOfReferenceUID" not in seg, name
        for group in [*seg.SharedFunctionalGroupsSequence,
                      *seg.PerFrameFunctionalGroupsSequence]:
            for macro in ("PixelMeasuresSequence", "PlanePositionSequence",
                          "PlaneOrientationSequence"):
                assert macro not in group, (name, macro)
        for group in seg.PerFrameFunctionalGroupsSequence:
            (derivation,) = group.DerivationImageSequence
            (source,) = derivation.SourceImageSequence
            assert source.ReferencedSOPInstanceUID == case.source.SOPInstanceUID, name
        assert (seg.BitsAllocated, seg.MaximumFractionalValue) == (8, 255), name
        assert seg.SeriesNumber == HEATMAP_SERIES_NUMBER, name
        assert seg.SeriesNumber != case.binary_seg.SeriesNumber, name
        assert seg.Manufacturer == case.binary_seg.Manufacturer, name
        assert str(seg.get("BodyPartExamined") or "") == str(
            case.source.get("BodyPartExamined") or ""), name
        assert seg.StudyInstanceUID == case.source.StudyInstanceUID, name


def test_uids_are_derived_and_distinct_from_the_binary_seg(heat_cases) -> None:  # noqa: ANN001
    keywords = ("SOPInstanceUID", "SeriesInstanceUID")
    uids = [str(getattr(seg, k)) for case in heat_cases.values()
            for seg in (case.seg, case.binary_seg) for k in keywords]
    assert len(set(uids)) == len(uids)
    tracking = [item.TrackingUID for case in heat_cases.values()
                for item in case.seg.SegmentSequence]
    assert len(set(tracking)) == len(tracking)
    for case in heat_cases.values():
        organization = case.seg.DimensionOrganizationSequence[0].DimensionOrganizationUID
        assert organization != (
            case.binary_seg.DimensionOrganizationSequence[0].DimensionOrganizationUID)


def test_same_analysis_twice_gives_the_same_uids_and_leaves_the_source(analyses) -> None:  # noqa: ANN001, F811
    """Deriving an object does not change the source header (it did: a shallow copy shared
    its elements, so a second call hashed another header and got other UIDs)."""
    analysis = next(a for a in analyses.values() if _positive(a)) if any(
        _positive(a) for a in analyses.values()) else _synthetic(analyses)
    source = analysis.radiograph.source_dataset
    before = [(element.tag, element.value) for element in source if element.VR != "SQ"]
    first, second = build_dicom_results(source, analysis), build_dicom_results(source, analysis)
    assert [(element.tag, element.value) for element in source if element.VR != "SQ"] == before
    for kind in ("seg", "sr", "heatmap_seg"):
        one, two = getattr(first, kind), getattr(second, kind)
        assert one.SOPInstanceUID == two.SOPInstanceUID, kind


def test_no_positive_finding_no_heatmap_seg(analyses, tmp_path: Path) -> None:  # noqa: ANN001, F811
    """Without a positive finding there is no heat-map SEG, in the results or the folder."""
    analysis = next(iter(analyses.values()))
    negative = dataclasses.replace(analysis, findings=[
        dataclasses.replace(f, positive=False, heatmap=None) for f in analysis.findings])
    results = build_dicom_results(negative.radiograph.source_dataset, negative)
    assert results.heatmap_seg is None
    assert [kind for kind, _ in results.items()] == ["seg", "sr"]
    assert "heatmap_seg" not in write_outputs(negative, tmp_path, OUTPUT_KINDS).files


def test_write_outputs_writes_the_heatmap_seg(heat_cases, analyses,  # noqa: ANN001, F811
                                              tmp_path: Path) -> None:
    name, case = next(iter(heat_cases.items()))
    analysis = analyses[name] if case.real else _synthetic(analyses)
    assert "heatmap_seg" not in write_outputs(analysis, tmp_path / "default").files
    written = write_outputs(analysis, tmp_path, ["heatmap_seg"])
    path = written.files["heatmap_seg"]
    assert path == written.folder / "heatmap_seg.dcm"
    assert pydicom.dcmread(path).SOPInstanceUID == case.seg.SOPInstanceUID
