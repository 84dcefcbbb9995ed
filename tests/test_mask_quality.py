"""The mask quality estimate: it ranks real errors (lungs; pneumothorax on a tiny held-out
set), and reaches analysis.json, the SR and ``cxr analyze``'s review.csv (worst first)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from cxr_core import RefusedInput, read_radiograph, read_sr, write_outputs
from cxr_core.mask_quality import CORE, EXTENT, mask_agreement
from cxr_core.padding import condition, paste
from cxr_core.terminology import MASK_AGREEMENT, MASK_AGREEMENT_METHOD
from cxr_core.training.data import (
    LUNG_STRUCTURES,
    read_manifest,
    read_mask,
    sample_targets,
    shared_lung_samples,
)
from cxr_core.training.metrics import dice_iou
from cxr_core.training.quality_eval import (
    POOR_DICE,
    POOR_PNEUMOTHORAX_DICE,
    pneumothorax_quality_figures,
    quality_figures,
    spearman,
)
from tests.conftest import RG1_UNCR, SHARED_DATA

CXR = [sys.executable, "-m", "cxr_core.cli"]
GB_IMAGES = SHARED_DATA / "covid_cxr_gb_lr_lungs" / "images"


def test_agreement_is_the_dice_of_core_and_extent() -> None:
    import torch

    crisp = torch.zeros(1, 8, 8)
    crisp[0, 2:6, 2:6] = 0.99
    soft = crisp.clone()
    soft[0, 1, 2:6] = 0.5  # a hesitant row: in the extent, not in the core
    assert mask_agreement(crisp) == [1.0]
    core, extent = (soft > CORE).sum().item(), (soft > EXTENT).sum().item()
    assert mask_agreement(soft) == [round(2 * core / (core + extent), 4)] and core < extent
    assert mask_agreement(torch.zeros(1, 4, 4)) == [1.0]  # nothing drawn: nothing to doubt


def test_estimate_ranks_true_dice_on_the_radiologists_test_masks(engine) -> None:
    """Every General Blockchain test image (radiologists' masks, never trained on)."""
    segmenter = engine.stage("lungs").segmenter
    rows = []
    for sample in [s for s in shared_lung_samples(SHARED_DATA)
                   if s.split == "test" and s.source == "covid_cxr_gb_lr_lungs"]:
        image = read_radiograph(sample.image).pixels
        conditioned, box = condition(image)
        output = segmenter(conditioned)
        truth = sample_targets(sample, LUNG_STRUCTURES)
        rows.append({name: {"quality": output.agreement[name],
                            "dice": dice_iou(paste(output.masks[name], box, image.shape),
                                             truth[name])[0]}
                     for name in ("right_lung", "left_lung") if name in truth})
    figures = quality_figures(rows, bootstrap=200)
    lungs = [(r[n]["quality"], r[n]["dice"]) for r in rows for n in r]
    assert len(rows) >= 12
    assert spearman([q for q, _ in lungs], [d for _, d in lungs]) >= 0.5
    images = figures["images"]
    assert images["poor_lung_masks"] >= 1  # the set has masks worth finding
    # the lowest-scored fifth of the images holds at least half of the poor lung masks
    assert images["poor_lung_masks_in_lowest_20pct"] * 2 >= images["poor_lung_masks"]
    assert figures["poor_dice"] == POOR_DICE


def test_estimate_reaches_json_and_sr(engine, tmp_path: Path) -> None:
    analysis = engine.analyze(read_radiograph(RG1_UNCR))
    written = write_outputs(analysis, tmp_path)
    summary = json.loads(written.files["json"].read_text())
    quality = {s["name"]: s["quality"] for s in summary["segments"]}
    assert set(quality) >= {"right_lung", "left_lung", "heart"}
    assert all(0.0 < q <= 1.0 for q in quality.values())
    assert summary["review_score"] == min(quality["right_lung"], quality["left_lung"])
    report = hd.sr.srread(written.files["sr"])
    found = {}
    for group in report.content.get_planar_roi_measurement_groups():
        site = group.finding_sites[0]
        side = site.laterality.meaning if site.laterality else None
        for measurement in group.get_measurements(name=MASK_AGREEMENT):
            found[(site.value.meaning, side)] = measurement
    assert {("Lung", "Right"), ("Lung", "Left"), ("Heart", None)} <= set(found)
    right = found[("Lung", "Right")]
    assert float(right.value) == quality["right_lung"]
    assert right.method.value == MASK_AGREEMENT_METHOD.value  # how it was derived
    # our own reader (the DICOM database worklist's) gets the same figures back
    content = read_sr(written.files["sr"])
    assert content.quality == {name: quality[name] for name in content.quality}
    assert set(content.quality) >= {"right_lung", "left_lung", "heart"}
    assert content.review_score == summary["review_score"]
    assert content.source_sop_instance_uid == str(analysis.radiograph.source_dataset.SOPInstanceUID)
    assert content.seg_sop_instance_uid == str(pydicom.dcmread(written.files["seg"]).SOPInstanceUID)
    assert {m["id"] for m in summary["models"]} <= set(content.models)
    with pytest.raises(RefusedInput, match="not a DICOM Structured Report"):
        read_sr(written.files["seg"])


def test_analyze_writes_review_csv_worst_first(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    # gb_019: a poor right lung (Dice < 0.92); gb_084, gb_089: good; and one refusal
    for stem in ("gb_084", "gb_019", "gb_089"):
        (inputs / f"{stem}.png").symlink_to(GB_IMAGES / f"{stem}.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    result = subprocess.run([*CXR, "analyze", str(inputs), "--out", str(out)],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            check=False, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]  # the broken file is refused
    with (out / "review.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(r["input"]).stem for r in rows][:1] == ["gb_019"]
    assert [r["status"] for r in rows] == ["analyzed"] * 3 + ["refused"]
    scores = [float(r["review_score"]) for r in rows[:3]]
    assert scores == sorted(scores)
    for row in rows[:3]:
        summary = json.loads((out / row["folder"] / "analysis.json").read_text())
        assert summary["review_score"] == float(row["review_score"])
    assert rows[3]["review_score"] == "" and Path(rows[3]["input"]).name == "broken.png"
    assert np.isfinite(scores).all()


def test_pneumothorax_estimate_ranks_the_held_out_masks(engine) -> None:
    """The SIIM-ACR positives the model was not trained on (val + test: 12, tiny): each
    reported mask carries its agreement, which orders the masks by true Dice; a missed
    pneumothorax has no mask and no estimate."""
    root = SHARED_DATA / "pneumothorax_siim_github"
    pairs = []
    for row in read_manifest(root):
        if row["label_pneumothorax"] != "1" or row["split"] == "train":
            continue
        analysis = engine.analyze(read_radiograph(root / row["image"]))
        segment = analysis.segments.get("pneumothorax")
        names = {m.name: m for m in analysis.measurements}
        if segment is None:
            assert "pneumothorax_mask_agreement" not in names
            pairs.append((None, 0.0))
            continue
        assert 0.0 < segment.quality <= 1.0
        assert names["pneumothorax_mask_agreement"].value == segment.quality
        assert "held-out SIIM-ACR" in names["pneumothorax_mask_agreement"].derivation
        pairs.append((segment.quality, dice_iou(segment.mask,
                                                read_mask(root / row["mask_pneumothorax"]))[0]))
    figures = pneumothorax_quality_figures(pairs, bootstrap=200)
    assert figures["n_positive"] == 12 and figures["n"] >= 6
    assert figures["spearman"] >= 0.5  # measured: 0.85 on 9 masks
    worst = min((p for p in pairs if p[0] is not None), key=lambda p: p[0])
    assert worst[1] < POOR_PNEUMOTHORAX_DICE  # the least trusted mask is a poor one
