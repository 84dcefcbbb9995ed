"""Our DICOM-SEG through the readers people use (issue 13): dciodvfy, PixelMed,
highdicom, GDCM, dcmjs with OHIF 3's loader (@cornerstonejs/adapters) and Orthanc, on the
SEG of every shared chest DICOM sample plus a pneumothorax-positive case; and the SEG's
identity (UIDs, algorithms, tracking, lossy compression, series attributes).

Each external tool runs once per SEG, in session fixtures. A reader failure is accepted
only when it is in :data:`ALLOWED`, with the exact message and why it is the reader's bug
(against PS3.3's text).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from cxr_core import (
    Analysis,
    RefusedInput,
    Segment,
    build_dicom_results,
    read_radiograph,
    read_seg,
)
from tests.conftest import DICOM_SAMPLES, REPO, dciodvfy_errors, require_tool
from tests.node.node_helpers import Orthanc, free_port

JS = REPO / "tests" / "js"
PIXELMED_JARS = ("/usr/share/java/pixelmed.jar", "/usr/share/java/commons-codec.jar")
JDK17_XPATH_LIMITS = ("-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0",
                      "-Djdk.xml.xpathTotalOpLimit=0")
# What @cornerstonejs/core's own metadata provider gives a CR/DX without Image Orientation
# (Patient) (imagePlaneCalibrated.js); the adapters accept only a SEG orientation in line with it
CORNERSTONE_DEFAULT_ORIENTATION = [1, 0, 0, 0, 1, 0]
NO_FRAME_OF_REFERENCE = ("PS3.3 Table A.51-2: Pixel Measures, Plane Position (Patient) and "
                         "Plane Orientation (Patient) 'May be present otherwise if the Frame of "
                         "Reference is defined in the patient-relative Reference Coordinate "
                         "System'; a CR/DX SEG has no Frame of Reference, so none may be present")

ALLOWED: dict[str, dict[str, str]] = {
    "pixelmed": {
        "Error: GeneralSeriesModule/Laterality/: : Missing conditional attribute":
            "PS3.3 C.7.3.1: Laterality is Type 2C, required only if the body part examined "
            "is a paired structure (CHEST is not); PixelMed's rule ignores that clause, and "
            "dciodvfy reports an empty Laterality as 'present when condition unsatisfied'.",
        "Error: GeneralImageModule/PatientOrientation/: PatientOrientation: Incorrect value "
        "multiplicity - got 2 but expected 1-1":
            "PS3.3 C.7.6.1: Patient Orientation (0020,0020) has VM 2 (row and column "
            "direction, e.g. L\\F); PixelMed's rule says VM 1.",
        "Error: DerivationImageMacro/DerivationImageSequence/: SharedFunctionalGroupsSequence/"
        "Item[1]/: Missing required sequence attribute (Type 2)":
            "PS3.3 C.7.6.16: a functional group macro is in the Shared or in the Per-frame "
            "items, not both; our Derivation Image is per frame (each frame names its source "
            "frame). PixelMed checks it in both, and moving it to Shared makes it report the "
            "per-frame items instead (and breaks highdicom's source-frame indexing).",
    },
    "dcmqi": {
        "Plane Orientation (Patient) is missing, cannot parse input":
            "dcmqi 1.5.7 segimage2itkimage (Slicer's QuantitativeReporting) builds an ITK "
            "volume and needs a plane orientation; " + NO_FRAME_OF_REFERENCE + ". SlicerCXR's "
            "own DICOM plugin loads these SEGs in Slicer (tests/slicer/test_dicom_seg_plugin.py).",
    },
    "cornerstone_adapters": {
        "TypeError: Cannot read properties of undefined (reading 'ImageOrientationPatient')":
            "@cornerstonejs/adapters 5.14 checkOrientation() reads PlaneOrientationSequence "
            "unconditionally; " + NO_FRAME_OF_REFERENCE + ". The same SEG with the orientation "
            "cornerstone assumes for the source loads, label maps equal to ours "
            "(test_ohif_loader_produces_our_label_maps).",
    },
}


@dataclass
class SegCase:
    """One SEG written from real engine output (or the synthetic pneumothorax case)."""

    seg_path: Path
    source_path: Path
    masks: dict[str, np.ndarray]
    """Our masks in the SEG's segment order (segment number = index + 1)."""
    models: dict[str, str]
    """``name@version`` of the model that drew each segment."""
    source: pydicom.Dataset
    seg: pydicom.Dataset
    sr_uid: str


def _chest_samples() -> list[Path]:
    chest = []
    for path in sorted(DICOM_SAMPLES.glob("*.dcm")):
        try:
            read_radiograph(path)
        except RefusedInput:  # RG3: an extremity, the intended negative control
            continue
        chest.append(path)
    return chest


def _with_pneumothorax(analysis: Analysis) -> Analysis:
    """The analysis with a synthetic pneumothorax: the outer fifth of the right lung's upper
    third (how the interop review exercised this writer path; not model output)."""
    lung = analysis.segments["right_lung"].mask
    rows, _ = np.nonzero(lung)
    top, bottom = rows.min(), rows.min() + (rows.max() - rows.min()) // 3
    _, columns = np.nonzero(lung[top:bottom])  # the upper third's own width
    left, right = columns.min(), columns.min() + (columns.max() - columns.min()) // 5
    mask = np.zeros_like(lung)
    mask[top:bottom, left:right] = lung[top:bottom, left:right]
    assert mask.sum() > 1000, "the synthetic pneumothorax must not be empty"
    model = next(m.id for m in analysis.models if m.id.startswith("pneumothorax@"))
    segments = dict(analysis.segments)
    segments["pneumothorax"] = Segment(name="pneumothorax", mask=mask,
                                       pixel_count=int(mask.sum()), area_mm2=None,
                                       model_id=model)
    return dataclasses.replace(analysis, segments=segments)


def _write_case(analysis: Analysis, source_path: Path, folder: Path) -> SegCase:
    source = analysis.radiograph.source_dataset
    results = build_dicom_results(source, analysis)
    path = folder / f"{len(list(folder.iterdir()))}_seg.dcm"
    results.seg.save_as(path, enforce_file_format=True)
    names = [SEGMENT_NAMES[str(item.SegmentLabel)] for item in results.seg.SegmentSequence]
    return SegCase(seg_path=path, source_path=source_path,
                   masks={n: analysis.segments[n].mask for n in names},
                   models={n: str(analysis.segments[n].model_id) for n in names},
                   source=source, seg=pydicom.dcmread(path),
                   sr_uid=str(results.sr.SOPInstanceUID))


SEGMENT_NAMES = {"Right lung": "right_lung", "Left lung": "left_lung",
                 "Heart and mediastinum": "heart", "Pneumothorax": "pneumothorax"}


@pytest.fixture(scope="session")
def analyses(engine) -> dict[str, Analysis]:  # noqa: ANN001
    """The engine's analysis of every shared chest sample, by file name."""
    return {path.name: engine.analyze(read_radiograph(path)) for path in _chest_samples()}


@pytest.fixture(scope="session")
def cases(analyses, tmp_path_factory) -> dict[str, SegCase]:  # noqa: ANN001
    """Every sample's SEG, and ``ptx`` (siim with a synthetic pneumothorax segment)."""
    folder = tmp_path_factory.mktemp("segs")
    written = {name: _write_case(analysis, DICOM_SAMPLES / name, folder)
               for name, analysis in analyses.items()}
    siim = next(name for name in analyses if name.startswith("siim_"))
    written["ptx"] = _write_case(_with_pneumothorax(analyses[siim]), DICOM_SAMPLES / siim,
                                 folder)
    return written


def _split_reports(output: str, marker: str) -> dict[str, list[str]]:
    """``Error`` lines per file of a multi-file run whose reports start with ``marker``."""
    reports: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output.splitlines():
        if line.startswith(marker):
            current = reports.setdefault(line[len(marker):].strip(), [])
        elif line.startswith("Error"):
            current.append(line.strip())
    return reports


@pytest.fixture(scope="session")
def pixelmed(cases) -> dict[str, list[str]]:  # noqa: ANN001
    """PixelMed DicomInstanceValidator's Error lines per case (one JVM for all)."""
    java = require_tool("java")
    paths = [str(case.seg_path) for case in cases.values()]
    result = subprocess.run(
        [java, *JDK17_XPATH_LIMITS, "-cp", ":".join(PIXELMED_JARS),
         str(REPO / "tests" / "java" / "ValidateInstances.java"), *paths],
        capture_output=True, text=True, check=True, timeout=300)
    reports = _split_reports(result.stdout, "=== ")
    return {name: reports[str(case.seg_path)] for name, case in cases.items()}


def _js_request(name: str, case: SegCase, out: Path, orientation: list[int] | None) -> dict:
    reference = case.seg.ReferencedSeriesSequence[0]
    out.mkdir(parents=True, exist_ok=True)
    return {"name": name, "seg": str(case.seg_path), "out": str(out),
            "assumeOrientation": orientation,
            "source": {"sopInstanceUID": str(case.source.SOPInstanceUID),
                       "sopClassUID": str(case.source.SOPClassUID),
                       "seriesInstanceUID": str(reference.SeriesInstanceUID),
                       "rows": int(case.seg.Rows), "columns": int(case.seg.Columns)}}


@pytest.fixture(scope="session")
def ohif(cases, tmp_path_factory) -> dict[str, dict]:  # noqa: ANN001
    """dcmjs + @cornerstonejs/adapters createFromDICOMSegBuffer (OHIF 3's SEG loader) on
    each SEG as written (``<name>``) and with cornerstone's assumed orientation
    (``<name>+orientation``), in one Node process."""
    node = require_tool("node")
    if not (JS / "node_modules" / "@cornerstonejs" / "adapters").is_dir():
        pytest.fail("tests/js has no node_modules; run scripts/install.sh --test")
    out = tmp_path_factory.mktemp("ohif")
    requests = []
    for name, case in cases.items():
        requests.append(_js_request(name, case, out / name, None))
        requests.append(_js_request(f"{name}+orientation", case, out / f"{name}+o",
                                    CORNERSTONE_DEFAULT_ORIENTATION))
    request_file = out / "requests.json"
    request_file.write_text(json.dumps(requests))
    result = subprocess.run([node, "load_seg.mjs", str(request_file)], cwd=JS,
                            capture_output=True, text=True, check=True, timeout=300)
    loaded = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {item["name"]: item for item in loaded}


@pytest.fixture(scope="session")
def orthanc(cases, tmp_path_factory):  # noqa: ANN001, ANN201
    """A loopback Orthanc holding every source and its SEG; stopped after the session."""
    server = Orthanc(tmp_path_factory.mktemp("orthanc"), node_port=free_port(),
                     stable_age=3600)  # never routes anything on
    server.start()
    try:
        for case in cases.values():
            server.upload(case.source_path)
            server.upload(case.seg_path)
        yield server
    finally:
        server.stop()


def test_dciodvfy_reports_no_error(cases) -> None:  # noqa: ANN001
    for name, case in cases.items():
        assert dciodvfy_errors(case.seg_path) == [], name


def test_pixelmed_reports_only_its_own_rule_defects(pixelmed) -> None:  # noqa: ANN001
    for name, errors in pixelmed.items():
        assert [e for e in errors if e not in ALLOWED["pixelmed"]] == [], name


def test_highdicom_reads_our_masks_per_source_instance(cases) -> None:  # noqa: ANN001
    for name, case in cases.items():
        seg = hd.seg.segread(case.seg_path)
        ((_, _, source_uid),) = seg.get_source_image_uids()
        assert source_uid == case.source.SOPInstanceUID, name
        pixels = seg.get_pixels_by_source_instance([source_uid], combine_segments=False)
        assert pixels.shape[-1] == len(case.masks), name
        for index, mask in enumerate(case.masks.values()):
            np.testing.assert_array_equal(pixels[0, :, :, index].astype(bool), mask)


def test_dcmqi_fails_only_on_the_allowlisted_orientation(cases, tmp_path) -> None:  # noqa: ANN001
    """Slicer's QuantitativeReporting reader: every SEG either reads or fails with the one
    allowlisted message (a projection radiograph has no plane orientation to give it)."""
    tool = Path(sys.executable).parent / "segimage2itkimage"
    assert tool.is_file(), "dcmqi is in the test extra (pip install -e .[test])"
    for name, case in cases.items():
        out = tmp_path / name
        out.mkdir()
        result = subprocess.run([str(tool), "--inputDICOM", str(case.seg_path),
                                 "--outputDirectory", str(out)],
                                capture_output=True, text=True, check=False, timeout=120)
        if result.returncode == 0:
            continue
        said = result.stdout + result.stderr
        assert any(message in said for message in ALLOWED["dcmqi"]), (name, said[-400:])


def test_gdcm_reads_the_frames(cases) -> None:  # noqa: ANN001
    gdcminfo = require_tool("gdcminfo")
    for name, case in cases.items():
        result = subprocess.run([gdcminfo, str(case.seg_path)], capture_output=True,
                                text=True, check=False, timeout=60)
        assert result.returncode == 0, (name, result.stderr[-300:])
        size = f"Dimensions: ({case.seg.Columns},{case.seg.Rows},{len(case.masks)})"
        assert size in result.stdout, name


def test_ohif_loader_fails_only_on_the_allowlisted_orientation(cases, ohif) -> None:  # noqa: ANN001
    for name, case in cases.items():
        loaded = ohif[name]
        assert loaded["dcmjs"]["frames"] == len(case.masks), name
        assert loaded["adapters"].get("error") in ALLOWED["cornerstone_adapters"], name


def test_ohif_loader_produces_our_label_maps(cases, ohif) -> None:  # noqa: ANN001
    """With the one attribute it insists on, OHIF's loader reads our frames, segments and
    source references as we wrote them: every segment's pixels equal ours."""
    for name, case in cases.items():
        loaded = ohif[f"{name}+orientation"]["adapters"]
        assert "error" not in loaded, (name, loaded)
        shape = (int(case.seg.Rows), int(case.seg.Columns))
        maps = [np.fromfile(item["file"], dtype=np.uint8).reshape(shape)
                for item in loaded["labelmaps"]]
        for number, mask in enumerate(case.masks.values(), start=1):
            found = np.logical_or.reduce([labels == number for labels in maps])
            np.testing.assert_array_equal(found, mask)


def test_orthanc_files_each_seg_under_its_source_study(cases, orthanc) -> None:  # noqa: ANN001
    for name, case in cases.items():
        (instance,) = [i for i in orthanc.get("/instances?expand")
                       if i["MainDicomTags"]["SOPInstanceUID"] == case.seg.SOPInstanceUID]
        study = orthanc.get(f"/instances/{instance['ID']}/study")
        assert study["MainDicomTags"]["StudyInstanceUID"] == case.source.StudyInstanceUID, name
    stored = {i["MainDicomTags"]["SOPInstanceUID"] for i in orthanc.get("/instances?expand")}
    assert {str(case.seg.SOPInstanceUID) for case in cases.values()} <= stored


def test_seg_has_no_plane_geometry_without_frame_of_reference(cases) -> None:  # noqa: ANN001
    for name, case in cases.items():
        assert "FrameOfReferenceUID" not in case.seg, name
        groups = [*case.seg.SharedFunctionalGroupsSequence,
                  *case.seg.PerFrameFunctionalGroupsSequence]
        for group in groups:
            for macro in ("PixelMeasuresSequence", "PlanePositionSequence",
                          "PlaneOrientationSequence"):
                assert macro not in group, (name, macro)
        for group in case.seg.PerFrameFunctionalGroupsSequence:
            assert "DerivationImageSequence" in group, name


def test_each_segment_names_the_one_model_that_drew_it(cases) -> None:  # noqa: ANN001
    for name, case in cases.items():
        for item, segment in zip(case.seg.SegmentSequence, case.models, strict=True):
            (algorithm,) = item.SegmentationAlgorithmIdentificationSequence
            model, version = case.models[segment].split("@")
            assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (model, version)
            assert item.SegmentAlgorithmName == model, name
    ptx = cases["ptx"].seg.SegmentSequence[-1]
    assert ptx.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "pneumothorax"


def test_tracking_uids_are_unique_per_analysis(cases) -> None:  # noqa: ANN001
    uids = [item.TrackingUID for case in cases.values() for item in case.seg.SegmentSequence]
    assert len(set(uids)) == len(uids)


def test_uids_follow_the_source_content_not_only_its_uid(cases) -> None:  # noqa: ANN001
    siim = next(c for n, c in cases.items() if n.startswith("siim_"))
    txv = next(c for n, c in cases.items() if n.startswith("txv_"))
    assert siim.source.SOPInstanceUID == txv.source.SOPInstanceUID  # the samples' premise
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID"):
        assert getattr(siim.seg, keyword) != getattr(txv.seg, keyword)
    assert siim.sr_uid != txv.sr_uid
    uids = [getattr(c.seg, k) for c in cases.values()
            for k in ("SOPInstanceUID", "SeriesInstanceUID")]
    assert len(set(uids)) == len(uids)


# set by the writer at the time it runs, by definition of the attributes
CREATION_TIME = ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime")


def _drop_creation_times(dataset: pydicom.Dataset) -> None:
    for keyword in CREATION_TIME:
        if keyword in dataset:
            delattr(dataset, keyword)
    for item in dataset.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            del item.ContributionDateTime


def test_same_input_twice_gives_the_same_object(engine, cases) -> None:  # noqa: ANN001
    path = next(DICOM_SAMPLES.glob("nih_gcp_*.dcm"))
    first, second = (build_dicom_results(a.radiograph.source_dataset, a) for a in
                     (engine.analyze(read_radiograph(path)) for _ in range(2)))
    for kind in ("seg", "sr"):
        one, two = getattr(first, kind), getattr(second, kind)
        for dataset in (one, two):
            _drop_creation_times(dataset)
        assert one == two, kind
    nih = next(c for n, c in cases.items() if n.startswith("nih_"))
    assert first.seg.SOPInstanceUID == nih.seg.SOPInstanceUID
    organization = first.seg.DimensionOrganizationSequence[0].DimensionOrganizationUID
    assert {i.DimensionOrganizationUID for i in first.seg.DimensionIndexSequence} == {
        organization}


def test_lossy_compression_is_complete(cases) -> None:  # noqa: ANN001
    for name, case in cases.items():
        if case.seg.LossyImageCompression == "01":
            assert case.seg.LossyImageCompressionMethod, name
            assert float(case.seg.LossyImageCompressionRatio) > 1, name
    j2ki = next(c for n, c in cases.items() if n.startswith("RG1_J2KI"))
    assert (j2ki.seg.LossyImageCompressionMethod, j2ki.seg.LossyImageCompressionRatio) == (
        "ISO_15444_1", "10")  # method from the transfer syntax, ratio from the source
    siim = next(c for n, c in cases.items() if n.startswith("siim_"))
    assert siim.seg.LossyImageCompressionMethod == "ISO_10918_1"
    assert re.fullmatch(r"\d+\.\d", str(siim.seg.LossyImageCompressionRatio))  # measured
    uncompressed = next(c for n, c in cases.items() if n.startswith("RG1_UNCR"))
    assert uncompressed.seg.LossyImageCompression == "00"


def test_series_and_study_attributes_follow_the_source(cases) -> None:  # noqa: ANN001
    """General Study and Patient attributes, and the series' Body Part Examined, are the
    source's (empty where the source has none: they are Type 2)."""
    copied = ("BodyPartExamined", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
              "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "PatientName",
              "PatientID", "PatientBirthDate", "PatientSex")
    for name, case in cases.items():
        # only keywords in the message: the values are patient data
        differing = [k for k in copied
                     if str(case.seg.get(k) or "") != str(case.source.get(k) or "")]
        assert differing == [], name


def test_our_reader_still_reads_every_seg(cases) -> None:  # noqa: ANN001
    for name, case in cases.items():
        content = read_seg(case.seg_path)
        for segment, mask in case.masks.items():
            np.testing.assert_array_equal(content.masks[segment], mask, err_msg=name)

