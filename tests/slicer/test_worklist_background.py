"""Analysis off the GUI thread and the review worklist, on real MRML with a real process.

``cxr analyze`` runs as a subprocess (as the module runs it), its progress is parsed
from its output, a second run is cancelled mid-way, and the worklist opens the finished
run's cases least-trusted first, with the model versions that made them. A volume with
no file behind it goes to the same background process and comes back with the masks and
measurements an in-process analysis gives it.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from SlicerCXRLib.background import BackgroundProcess
from SlicerCXRLib.export import segmentation_masks
from SlicerCXRLib.mrml import set_radiograph_geometry
from SlicerCXRLib.scene_bridge import SPACING_SOURCE_ATTRIBUTE, radiograph_to_volume, source_file

from cxr_core.io import read_radiograph
from cxr_core.training.metrics import dice_iou
from tests.slicer.conftest import GB, gb_truth, path_of

# gb_019: the shipped model's right lung is poor (Dice < 0.92 against the radiologists);
# gb_084 and gb_089: both lungs above 0.96.
POOR, GOOD = "gb_019", ("gb_084", "gb_089")
TIMEOUT_S = 600


def _wait(process: BackgroundProcess, timeout: float = TIMEOUT_S) -> list[str]:
    """Poll as the module's timer does, until the process ends; every output line.

    ``wait`` hands over the lines read after the last poll (a refusal printed just before
    a quick exit), so they are taken from the progress record, which holds them all."""
    deadline = time.monotonic() + timeout
    while process.running and time.monotonic() < deadline:
        process.poll()
        time.sleep(0.2)
    process.wait(30)
    return list(process.progress.lines)


def test_tqdm_progress_is_parsed_from_a_real_process():
    script = ("import sys, time\nfrom tqdm import tqdm\n"
              "for _ in tqdm(range(7), file=sys.stderr, mininterval=0):\n    time.sleep(0.05)\n")
    process = BackgroundProcess([sys.executable, "-c", script]).start()
    _wait(process, 60)
    assert process.returncode == 0
    assert (process.progress.done, process.progress.total) == (7, 7)
    assert process.progress.fraction == 1.0


def test_folder_analysis_in_background_then_worklist_worst_first(logic, scene, tmp_path):
    inputs = [path_of(stem) for stem in (*GOOD, POOR)]
    out = tmp_path / "run"
    process = logic.analyze_in_background(inputs, out)
    assert process.running  # start returns at once: the caller's thread is free
    lines = _wait(process)
    assert process.returncode == 0, lines[-5:]
    assert process.progress.done == 3 and process.progress.fraction == 1.0
    assert sum(line.startswith("analyzed ") for line in lines) == 3

    worklist = logic.open_worklist(out)
    scores = [row.review_score for row in worklist.cases]
    assert len(worklist) == 3 and scores == sorted(scores)
    first = logic.next_case(worklist)
    assert first is not None and first.row.input.endswith(f"{POOR}.png")
    # the estimate put first the case whose masks really are worst
    truth = gb_truth(POOR)
    pixels = read_radiograph(path_of(POOR)).pixels
    masks, _ = segmentation_masks(first.segmentation, first.volume)
    assert masks["right_lung"].shape == pixels.shape
    assert dice_iou(masks["right_lung"], truth["right_lung"])[0] < 0.92
    assert any(model.startswith("lung_seg@") for model in first.models)
    names = [first.table.GetCellText(r, 1) for r in range(first.table.GetNumberOfRows())]
    assert {"right_lung_mask_agreement", "left_lung_mask_agreement"} <= set(names)
    assert any(name.startswith("lung_seg@") for name in names)  # which version made it
    cases = [first, *(logic.next_case(worklist) for _ in range(2))]
    assert len({case.row.input for case in cases}) == 3
    for case in cases:  # each positive finding's heat map comes back over its radiograph
        folder = out / case.row.folder / "heatmaps"
        assert set(case.heatmaps) == ({p.stem for p in folder.glob("*.png")}
                                      if folder.is_dir() else set())
    assert logic.next_case(worklist) is None  # past the last case


def test_cancel_stops_a_running_analysis(logic, tmp_path):
    process = logic.analyze_in_background([GB / "images"], tmp_path / "run")
    deadline = time.monotonic() + TIMEOUT_S
    while process.running and not any(line.startswith("analyzed ") for line in
                                       process.progress.lines) and time.monotonic() < deadline:
        process.poll()
        time.sleep(0.2)
    assert process.running, "the folder analysis ended before it could be cancelled"
    started = time.monotonic()
    process.cancel(grace=10)
    assert not process.running and process.cancelled
    assert time.monotonic() - started < 15
    assert process.returncode != 0
    assert process.progress.done < process.progress.total
    # a cancelled run writes no review list: only a finished run has one
    assert not (tmp_path / "run" / "review.csv").exists()
    assert np.isfinite(process.progress.fraction)


def test_one_volume_analysed_in_background_lands_on_that_volume(logic, tmp_path):
    from PIL import Image

    from cxr_core import RefusedInput

    volume = logic.load_radiograph(path_of(GOOD[0]))
    logic.set_pins({"lung_seg": "1.0.0"})  # the active version: honoured, and named
    process = logic.analyze_volume_in_background(volume, tmp_path / "one")
    assert "--pin" in process.command and "lung_seg@1.0.0" in process.command
    _wait(process)
    assert process.returncode == 0
    case = logic.show_background_result(volume, tmp_path / "one")
    assert case.volume is volume  # no second copy of the radiograph
    assert case.segmentation.GetSegmentation().GetNumberOfSegments() >= 3
    assert "lung_seg@1.0.0" in case.models

    logic.set_pins({"lung_seg": "0.0.1"})  # a version that is not kept: refused, not run
    process = logic.analyze_volume_in_background(volume, tmp_path / "pinned")
    lines = _wait(process)
    assert process.returncode == 2 and any("lung_seg@0.0.1 is not available" in line
                                           for line in lines)
    logic.set_pins({})

    noise = tmp_path / "noise.png"  # not a chest radiograph
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400), np.uint8)).save(noise)
    other = logic.load_radiograph(noise)
    process = logic.analyze_volume_in_background(other, tmp_path / "refused")
    _wait(process)
    with pytest.raises(RefusedInput, match="not a"):
        logic.show_background_result(other, tmp_path / "refused")


def test_volume_without_file_analysed_in_background_as_in_process(logic, scene, tmp_path):
    # pixels put in the scene with no file behind them, and a spacing declared by the user
    volume = radiograph_to_volume(scene, read_radiograph(path_of(POOR)), name="drawn volume")
    set_radiograph_geometry(volume, 0.25, 0.3)
    volume.SetAttribute(SPACING_SOURCE_ATTRIBUTE, "calibrated")
    assert source_file(volume) is None
    in_process = logic.analyze(volume)
    expected, _ = segmentation_masks(in_process.segmentation, volume)
    analysis = logic.analyses[volume.GetID()]

    process = logic.analyze_volume_in_background(volume, tmp_path / "one")
    assert "--pixel-spacing" in process.command
    _wait(process)
    assert process.returncode == 0, process.progress.lines[-5:]
    case = logic.show_background_result(volume, tmp_path / "one")
    assert case.volume is volume
    masks, _ = segmentation_masks(case.segmentation, volume)
    for name, mask in expected.items():  # the same pixels and model: the same masks
        assert np.array_equal(masks[name], mask), name
    assert case.row.review_score == analysis.review_score
    rows = {case.table.GetCellText(r, 1): (float(case.table.GetCellText(r, 2)),
                                           case.table.GetCellText(r, 3))
            for r in range(case.table.GetNumberOfRows())}
    for measurement in analysis.measurements:  # mm where the declared spacing allows
        value, unit = rows[measurement.name]
        assert unit == measurement.unit
        assert value == pytest.approx(measurement.value, rel=1e-3), measurement.name
    assert any(m.unit == "mm2" for m in analysis.measurements)

    # cancel: stopped mid-way, nothing picked up
    process = logic.analyze_volume_in_background(volume, tmp_path / "cancelled")
    assert process.running
    process.cancel(grace=10)
    assert process.cancelled and not process.running and process.returncode != 0
    assert not (tmp_path / "cancelled" / "review.csv").exists()
