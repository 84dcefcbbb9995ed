"""The engine on real files, through every writer: SEG, SR, overlay, JSON, masks."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from cxr_core import QualityFlag, read_radiograph, read_seg, write_outputs
from cxr_core.quality import check_polarity
from tests.conftest import DICOM_SAMPLES, RG1_UNCR, dciodvfy_errors, dsrdump

PHOTOMETRIC_MISMATCH = QualityFlag.PHOTOMETRIC_MISMATCH

LUNG = "39607008"
LATERALITY = {"right_lung": "24028007", "left_lung": "7771000"}
SIIM = next(DICOM_SAMPLES.glob("siim_*.dcm"))
NIH_DX = next(DICOM_SAMPLES.glob("nih_gcp_*.dcm"))


@pytest.fixture(scope="module")
def written(engine, tmp_path_factory) -> dict[str, tuple]:
    """Analyses and output folders of three different DICOM sources."""
    out = tmp_path_factory.mktemp("outputs")
    results = {}
    for path in (RG1_UNCR, SIIM, NIH_DX):
        analysis = engine.analyze(read_radiograph(path))
        results[path.name] = (analysis, write_outputs(analysis, out))
    return results


def test_lungs_are_found_on_real_chest_radiographs(written) -> None:
    for name, (analysis, _) in written.items():
        right, left = analysis.segments["right_lung"], analysis.segments["left_lung"]
        fraction = (right.pixel_count + left.pixel_count) / analysis.radiograph.pixels.size
        assert 0.12 < fraction < 0.6, name
        assert not {"lungs_not_found", "one_lung_not_found"} & set(analysis.quality_flags)
        # radiological display: the patient's right lung is on the image's left
        columns = [np.nonzero(s.mask.any(axis=0))[0].mean() for s in (right, left)]
        assert columns[0] < columns[1], name


def test_seg_validates_and_round_trips(written) -> None:
    for name, (analysis, outputs) in written.items():
        seg_path = outputs.files["seg"]
        assert dciodvfy_errors(seg_path) == [], name
        content = read_seg(seg_path)
        assert set(content.masks) == set(analysis.segments)
        for segment_name, mask in content.masks.items():
            np.testing.assert_array_equal(mask, analysis.segments[segment_name].mask)
        source = analysis.radiograph.source_dataset
        assert content.source_sop_instance_uid == source.SOPInstanceUID


def test_seg_codes_laterality_and_references(written) -> None:
    analysis, outputs = written[RG1_UNCR.name]
    seg = pydicom.dcmread(outputs.files["seg"])
    assert seg.SegmentationType == "BINARY" and "FrameOfReferenceUID" not in seg
    by_label = {item.SegmentLabel: item for item in seg.SegmentSequence}
    for name, code in LATERALITY.items():
        item = by_label["Right lung" if name == "right_lung" else "Left lung"]
        type_item = item.SegmentedPropertyTypeCodeSequence[0]
        assert type_item.CodeValue == LUNG
        assert type_item.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == code
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == analysis.radiograph.source_dataset.SeriesInstanceUID
    assert seg.PatientOrientation == ["L", "F"]


def test_sr_validates_and_reads(written) -> None:
    for name, (_, outputs) in written.items():
        sr_path = outputs.files["sr"]
        assert dciodvfy_errors(sr_path) == [], name
        text = dsrdump(sr_path)
        assert "Imaging Measurement Report" in text and '"Area"' in text
        report = hd.sr.srread(sr_path)
        groups = report.content.get_image_measurement_groups()
        assert groups, name


def test_areas_in_mm2_only_with_trusted_spacing(written) -> None:
    units = {}
    for name, (analysis, _) in written.items():
        units[name] = analysis.measurement("right_lung_area").unit
    assert units[SIIM.name] == "mm2"  # PixelSpacing 0.168
    assert units[RG1_UNCR.name] == "{pixels}"  # PixelSpacing 0\0
    assert units[NIH_DX.name] == "{pixels}"  # no spacing at all
    sr_text = dsrdump(written[RG1_UNCR.name][1].files["sr"])
    assert "pixels" in sr_text and "not mm2" in sr_text


def test_cardiothoracic_ratio_is_plausible(written) -> None:
    for name, (analysis, _) in written.items():
        ratio = analysis.measurement("cardiothoracic_ratio")
        assert ratio is not None and 0.3 < ratio.value < 0.7, name


def test_json_masks_and_overlay(written) -> None:
    analysis, outputs = written[RG1_UNCR.name]
    summary = json.loads(outputs.files["json"].read_text())
    assert {s["name"] for s in summary["segments"]} == set(analysis.segments)
    assert summary["pixel_spacing"]["source"] == "unknown"
    assert [m["id"].split("@")[0] for m in summary["models"]] == [
        "chest_gate", "lung_seg", "findings", "pneumothorax"]
    assert analysis.segments["right_lung"].model_id.startswith("lung_seg@")
    assert "PatientName" not in outputs.files["json"].read_text()
    mask = np.asarray(Image.open(outputs.files["mask:right_lung"]))
    assert mask.shape == analysis.radiograph.shape
    overlay = Image.open(outputs.files["overlay"])
    # the radiograph at half size (at most 1024 px), the legend in a panel to its right
    assert overlay.mode == "RGB" and overlay.height == 978 and overlay.width > 921


def test_fake_monochrome1_is_flagged_and_still_segmented(engine) -> None:
    analysis = engine.analyze(read_radiograph(DICOM_SAMPLES / "txv_Fake_MONOHR1.dcm"))
    assert PHOTOMETRIC_MISMATCH in analysis.quality_flags
    reference = engine.analyze(read_radiograph(SIIM))  # the same image, honest header
    for name in ("right_lung", "left_lung"):
        overlap = analysis.segments[name].mask & reference.segments[name].mask
        union = analysis.segments[name].mask | reference.segments[name].mask
        assert overlap.sum() / union.sum() > 0.95


def test_png_input_gets_no_dicom_outputs(engine, shared_data: Path, tmp_path: Path) -> None:
    image = shared_data / "covid_cxr_gb_lr_lungs" / "images" / "gb_000.png"
    outputs = write_outputs(engine.analyze(read_radiograph(image)), tmp_path)
    assert "seg" not in outputs.files and outputs.files["overlay"].is_file()


def test_uids_are_deterministic(written, engine, tmp_path: Path) -> None:
    _, first = written[RG1_UNCR.name]
    again = write_outputs(engine.analyze(read_radiograph(RG1_UNCR)), tmp_path)
    for kind in ("seg", "sr"):
        assert (pydicom.dcmread(first.files[kind]).SOPInstanceUID
                == pydicom.dcmread(again.files[kind]).SOPInstanceUID)


def test_mirrored_image_keeps_patient_sides(engine, tmp_path: Path) -> None:
    """A film displayed mirrored (PatientOrientation R\\F) has the patient's right lung on
    the image's right: laterality must follow the header, not the image position."""
    dataset = pydicom.dcmread(RG1_UNCR)
    dataset.PixelData = np.ascontiguousarray(dataset.pixel_array[:, ::-1]).tobytes()
    dataset.PatientOrientation = ["R", "F"]
    path = tmp_path / "mirrored.dcm"
    dataset.save_as(path)
    analysis = engine.analyze(read_radiograph(path))
    assert "mirrored_orientation" in analysis.quality_flags
    right = np.nonzero(analysis.segments["right_lung"].mask.any(axis=0))[0].mean()
    left = np.nonzero(analysis.segments["left_lung"].mask.any(axis=0))[0].mean()
    assert right > left


def test_genuine_images_the_heuristic_suspects_are_not_inverted(engine, shared_data) -> None:
    """The cheap strip heuristic flags ~2 % of real images; the model must overrule it."""
    import csv

    checked = 0
    for folder in ("covid_cxr_v7lungs", "covid_cxr_gb_lr_lungs", "pneumothorax_siim_github"):
        with (shared_data / folder / "manifest.csv").open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("is_frontal_cxr") == "False":
                    continue  # CT slices and laterals: the gate refuses them first
                radiograph = read_radiograph(shared_data / folder / row["image"])
                if check_polarity(radiograph.pixels) != "inverted":
                    continue
                assert PHOTOMETRIC_MISMATCH not in engine.analyze(radiograph).quality_flags
                checked += 1
    assert checked >= 3


# ------------------------------------------------ a rule that overrode a probability
def test_every_probability_contradicting_its_decision_carries_a_note(written) -> None:
    for name, (analysis, outputs) in written.items():
        listed = json.loads(outputs.files["json"].read_text())["findings"]
        for finding, item in zip(analysis.findings, listed, strict=True):
            overruled = finding.probability >= finding.threshold and not finding.positive
            assert bool(finding.note) == overruled, (name, finding.name)
            assert item.get("note") == finding.note


def test_note_reaches_json_sr_and_overlay_legend(written) -> None:
    """RG1_UNCR: the pneumothorax network's highest pixel is 0.86, above the 0.5
    threshold, but only specks reach it: the finding is negative and says why."""
    from cxr_core.writers.overlay import overlay_parts

    analysis, outputs = written[RG1_UNCR.name]
    finding = next(f for f in analysis.findings if f.name == "pneumothorax")
    assert finding.probability >= 0.5 and not finding.positive
    assert finding.note is not None and finding.note.startswith(
        f"{finding.probability:.2f} is the highest pixel probability")
    assert finding.note.endswith("not reported")
    legend = [line.text for line in overlay_parts(analysis).legend]
    assert f"pneumothorax: {finding.probability:.2f} (not reported)" in legend
    assert finding.note in legend
    sr_path = outputs.files["sr"]
    assert dciodvfy_errors(sr_path) == []
    assert f'<contains TEXT:(,,"Comment")="{finding.note}">' in dsrdump(sr_path)
    report = hd.sr.srread(sr_path)
    group = next(g for g in report.content.get_image_measurement_groups()
                 if g.finding_type is not None and g.finding_type.value == finding.code.value)
    comments = [item.TextValue for item in group[0].ContentSequence
                if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue
                == "121106"]
    assert comments == [finding.note]


def test_note_names_the_rule_that_decided(engine) -> None:
    from cxr_core.radiograph import PixelSpacing, SpacingSource
    from cxr_core.stages.pneumothorax import Detection

    detector = engine.stage("pneumothorax").detector
    trusted = PixelSpacing(0.2, 0.2, SpacingSource.PIXEL_SPACING)
    unknown = PixelSpacing.unknown()
    empty = np.zeros((100, 100), bool)
    apex, neck = empty.copy(), empty.copy()
    apex[20:23, 20:30] = True  # 30 px: 1.2 mm2 at 0.2 mm, 0.3 % of the image
    neck[0:5, 45:55] = True

    def note(candidates: np.ndarray, inside: np.ndarray, spacing: PixelSpacing, *,
             probability: float = 0.97, present: bool = False) -> str | None:
        found = Detection(inside if present else empty, probability, present,
                          np.zeros((8, 8), np.float32), candidates=candidates, inside=inside,
                          gated=True)
        return detector.note(found, spacing)

    assert "form only specks" in note(empty, empty, trusted)
    assert "lie mostly outside the lungs (thorax rule)" in note(neck, empty, trusted)
    assert note(apex, apex, trusted) == (
        "0.97 is the highest pixel probability; the pixels above 0.5 cover 1 mm2 within "
        "the lungs, below the minimum area (200 mm2): not reported")
    assert "cover 0.30% of the image within the lungs, below the minimum area (0.40% of " \
        "the image)" in note(apex, apex, unknown)
    assert "others lie mostly outside" in note(apex | neck, apex, trusted)
    assert note(apex, apex, trusted, present=True) is None
    assert note(empty, empty, trusted, probability=0.3) is None


def test_strict_minimum_area_is_named_with_its_numbers(engine, shared_data: Path) -> None:
    """A real SIIM positive under a minimum of half the image (no lungs given, so no
    thorax gate): negative, and the note gives the region's share and the minimum."""
    from cxr_core.analysis import Analysis
    from cxr_core.stages.pneumothorax import MinimumArea, PneumothoraxDetector, PneumothoraxStage

    detector = engine.stage("pneumothorax").detector
    strict = PneumothoraxStage(PneumothoraxDetector(detector.segmenter,
                                                    MinimumArea(fraction=0.5)))
    image = (shared_data / "pneumothorax_siim_github" / "images"
             / "siim_1.2.276.0.7230010.3.1.4.8323329.5085.1517875186.344997.png")
    analysis = Analysis(radiograph=read_radiograph(image))
    strict.run(analysis)
    finding = analysis.findings[0]
    assert not finding.positive and finding.probability >= 0.5
    assert finding.note is not None
    assert "within the lungs" not in finding.note
    assert "of the image, below the minimum area (50.00% of the image)" in finding.note
