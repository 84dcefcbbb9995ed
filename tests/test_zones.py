"""Findings per lung zone: zone masks from the two lung masks (thirds of each lung's
height, patient sides kept on mirrored images), the zone a heat map points at, and the
zones in the JSON, the SR (Finding Site with laterality, still valid DICOM) and the
overlay's legend."""

from __future__ import annotations

import dataclasses
import json

import highdicom as hd
import numpy as np
import pytest

from cxr_core import (
    Analysis,
    Finding,
    PixelSpacing,
    Radiograph,
    Segment,
    WrittenOutputs,
    read_radiograph,
    write_outputs,
)
from cxr_core.stages.findings import add_zones
from cxr_core.terminology import FINDING_CODES, LUNG_ZONES, SIDES
from cxr_core.training.findings_evaluate import zone_hits
from cxr_core.writers.overlay import ZONE_RGB, overlay_parts
from cxr_core.zones import finding_zones, zone_masks, zone_shares
from tests.conftest import RG1_UNCR, dciodvfy_errors, dsrdump

SHAPE = (120, 100)


def _lungs(mirrored: bool = False) -> dict[str, np.ndarray]:
    """Right lung rows 10-69, left lung rows 30-89 (60 rows each); in radiological display
    the right lung lies on the image's left (columns 10-39), mirrored on its right."""
    right, left = np.zeros(SHAPE, dtype=bool), np.zeros(SHAPE, dtype=bool)
    image_left, image_right = slice(10, 40), slice(60, 90)
    right[10:70, image_right if mirrored else image_left] = True
    left[30:90, image_left if mirrored else image_right] = True
    return {"right_lung": right, "left_lung": left}


def _blob(row: int, column: int, sigma: float = 6.0) -> np.ndarray:
    rows, columns = np.mgrid[:SHAPE[0], :SHAPE[1]]
    heat = np.exp(-((rows - row) ** 2 + (columns - column) ** 2) / (2 * sigma**2))
    return (heat / heat.max()).astype(np.float32)


def test_each_lung_is_cut_into_thirds_of_its_own_height() -> None:
    lungs = _lungs()
    zones = zone_masks(lungs)
    assert set(zones) == {f"{side}_{level}" for side in ("right", "left")
                          for level in ("upper", "middle", "lower")}
    bands = {"right": (10, 30, 50, 70), "left": (30, 50, 70, 90)}
    for side, edges in bands.items():
        for level, start, stop in zip(("upper", "middle", "lower"), edges, edges[1:],
                                      strict=False):
            rows = np.flatnonzero(zones[f"{side}_{level}"].any(axis=1))
            assert (rows[0], rows[-1] + 1) == (start, stop), (side, level)
        union = sum(zones[f"{side}_{level}"].astype(int)
                    for level in ("upper", "middle", "lower"))
        assert union.max() == 1  # disjoint
        np.testing.assert_array_equal(union.astype(bool), lungs[f"{side}_lung"])


def test_one_missing_lung_leaves_the_other_zones() -> None:
    lungs = _lungs()
    lungs["left_lung"] = np.zeros(SHAPE, dtype=bool)
    assert set(zone_masks(lungs)) == {"right_upper", "right_middle", "right_lower"}


def test_attribution_names_the_zone_where_the_heat_is() -> None:
    lungs = _lungs()
    # left lower zone: rows 70-89, on the image's right in radiological display
    zones = finding_zones(_blob(80, 75), lungs)
    assert zones[0].name == "left lower zone"
    assert zones[0].share > 0.5
    assert [z.share for z in zones] == sorted((z.share for z in zones), reverse=True)
    shares = zone_shares(_blob(80, 75), lungs)
    assert len(shares) == 6 and sum(z.share for z in shares) == pytest.approx(1.0)
    # heat between two zones names both, the larger share first
    both = finding_zones(_blob(50, 25, sigma=4.0), lungs)
    assert {z.name for z in both} == {"right middle zone", "right lower zone"}


def test_flat_heat_or_no_lungs_names_no_zone() -> None:
    assert finding_zones(np.full(SHAPE, 0.7, dtype=np.float32), _lungs()) == []
    assert finding_zones(_blob(80, 75), {}) == []


def test_mirrored_image_keeps_the_patient_side() -> None:
    """A mirrored image (patient-right on image-right): the lung masks are named by
    patient side, so heat over the image's right lower lung is the right lower zone."""
    lungs = _lungs(mirrored=True)
    zones = zone_masks(lungs)
    assert np.flatnonzero(zones["right_lower"].any(axis=0)).min() >= 60
    radiograph = Radiograph(np.zeros(SHAPE, dtype=np.float32), PixelSpacing.unknown(),
                            "mirrored", mirrored=True)
    analysis = Analysis(radiograph)
    analysis.segments = {name: _segment(name, mask) for name, mask in lungs.items()}
    finding = Finding("pneumonia", FINDING_CODES["pneumonia"], 0.9, 0.5, True,
                      heatmap=_blob(62, 75))
    negative = Finding("abnormal", FINDING_CODES["abnormal"], 0.1, 0.5, False)
    add_zones([finding, negative], analysis)
    assert finding.zones[0].name == "right lower zone"
    assert negative.zones == []


def test_zone_hits_against_a_box() -> None:
    lungs = _lungs()
    box = [("Pneumonia", 65.0, 72.0, 20.0, 14.0)]  # centre (79, 75): left lower zone
    hits = zone_hits(_blob(80, 75), lungs, box)
    assert hits["top_zone_centre"] == hits["top_zone_overlap"] == 1.0
    missed = zone_hits(_blob(20, 25), lungs, box)
    assert missed["top_zone_centre"] == missed["any_zone_overlap"] == 0.0
    assert missed["chance_centre"] == pytest.approx(1 / 6)


def _segment(name: str, mask: np.ndarray) -> Segment:
    return Segment(name, mask, int(mask.sum()), None)


@pytest.fixture(scope="module")
def zoned(engine, tmp_path_factory) -> tuple[Analysis, WrittenOutputs]:
    """RG1_UNCR through the engine (real lungs), its findings replaced by a positive
    pneumonia whose heat lies in the right lower zone and a negative abnormal, written."""
    analysis = engine.analyze(read_radiograph(RG1_UNCR))
    right = analysis.segments["right_lung"].mask
    rows, columns = np.nonzero(right)
    top, bottom = rows.min(), rows.max()
    row = int(top + 0.85 * (bottom - top))
    column = int(np.median(columns[rows == row]))
    yy, xx = np.mgrid[:right.shape[0], :right.shape[1]]
    sigma = 0.04 * right.shape[0]
    heat = np.exp(-((yy - row) ** 2 + (xx - column) ** 2) / (2 * sigma**2)).astype(np.float32)
    model = next(f.model_id for f in analysis.findings if f.name == "pneumonia")
    analysis.findings = [
        Finding("pneumonia", FINDING_CODES["pneumonia"], 0.91, 0.5, True, heatmap=heat,
                model_id=model),
        Finding("abnormal", FINDING_CODES["abnormal"], 0.2, 0.5, False, model_id=model)]
    add_zones(analysis.findings, analysis)
    assert analysis.findings[0].zones[0].name == "right lower zone"
    return analysis, write_outputs(analysis, tmp_path_factory.mktemp("zones"))


def test_json_carries_the_zones_of_a_positive_finding(zoned) -> None:
    _, outputs = zoned
    listed = {f["name"]: f for f in json.loads(outputs.files["json"].read_text())["findings"]}
    zones = listed["pneumonia"]["zones"]
    assert zones[0]["zone"] == "right lower zone"
    assert zones[0]["side"] == "right" and zones[0]["level"] == "lower"
    assert 0.5 < zones[0]["share"] <= 1.0
    assert "zones" not in listed["abnormal"]


def test_sr_finding_site_is_the_zone_with_laterality(zoned) -> None:
    _, outputs = zoned
    sr_path = outputs.files["sr"]
    assert dciodvfy_errors(sr_path) == []
    groups = {g.finding_type.value: g
              for g in hd.sr.srread(sr_path).content.get_image_measurement_groups()
              if g.finding_type is not None}
    sites = groups[FINDING_CODES["pneumonia"].value].finding_sites
    assert sites[0].value == LUNG_ZONES["lower"]
    assert sites[0].laterality == SIDES["right"]
    assert not groups[FINDING_CODES["abnormal"].value].finding_sites
    dump = dsrdump(sr_path)
    assert "Lower zone of lung" in dump and LUNG_ZONES["lower"].value in dump


def test_overlay_outlines_the_zone_and_names_it(zoned) -> None:
    analysis, _ = zoned
    parts = overlay_parts(analysis)
    texts = [line.text for line in parts.legend]
    assert any(t.startswith("pneumonia: 0.91 (positive) - right lower zone") for t in texts)
    assert any(t.startswith("Zone outline") for t in texts)
    plain = overlay_parts(dataclasses.replace(analysis, findings=[]))
    outlined = np.all(parts.image == ZONE_RGB, axis=2) & ~np.all(plain.image == ZONE_RGB,
                                                                 axis=2)
    step = max(1, int(np.ceil(max(analysis.radiograph.shape) / 1024)))
    right = analysis.segments["right_lung"].mask[::step, ::step]
    rows = np.flatnonzero(outlined.any(axis=1))
    lung_rows = np.flatnonzero(right.any(axis=1))
    assert rows.size and rows.min() >= lung_rows[0] + 0.6 * (lung_rows[-1] - lung_rows[0])
