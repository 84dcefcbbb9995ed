"""The chest gate: held to its card, and what it makes the engine, the CLI and the node do
with what is not an upright frontal chest radiograph."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from cxr_core import Engine, QualityFlag, RefusedInput, read_radiograph
from cxr_core.stages.gate import ChestGate
from cxr_core.training.gate_data import gate_samples
from cxr_core.training.gate_evaluate import evaluate_gate
from cxr_core.training.gate_synthetic import synthetic_image
from tests.conftest import DICOM_SAMPLES, RG1_UNCR, SHARED_DATA

CXR = [sys.executable, "-m", "cxr_core.cli"]
V7 = SHARED_DATA / "covid_cxr_v7lungs"


@pytest.fixture(scope="module")
def gate() -> ChestGate:
    return ChestGate.load()


@pytest.fixture(scope="module")
def measured(gate: ChestGate, tmp_path_factory: pytest.TempPathFactory) -> dict:
    samples = [s for s in gate_samples(SHARED_DATA) if s.split == "test"]
    return evaluate_gate(gate, samples, tmp_path_factory.mktemp("gate"))


def test_card_figures_reproduce(gate: ChestGate, measured: dict) -> None:
    claimed = gate.card.evaluation
    for key in ("false_refusal_frontal_chests", "refusal_not_frontal",
                "refusal_unseen_sources"):
        assert measured[key] == claimed[key], key
    assert measured["orientation"]["summary"] == claimed["orientation"]["summary"]


def test_the_gate_meets_its_goals(measured: dict) -> None:
    """At most 1 % of real frontal chests refused; what it never saw is refused; turned
    chests are refused; an upright chest almost never has its sides swapped."""
    assert measured["false_refusal_frontal_chests"]["rate"] <= 0.01
    for source, entry in measured["per_source"].items():
        if entry["content"] == "frontal":
            assert entry["rate"] <= 0.02, source
    assert measured["refusal_unseen_sources"]["rate"] >= 0.95
    summary = measured["orientation"]["summary"]
    assert summary["turned_refused"]["rate"] >= 0.98
    assert summary["upright_wrongly_mirrored"]["rate"] <= 0.005
    assert summary["mirrored_detected"]["rate"] >= 0.7


def _without_body_part(source: Path, target: Path) -> Path:
    dataset = pydicom.dcmread(source)
    del dataset.BodyPartExamined
    dataset.save_as(target)
    return target


def test_cli_refuses_what_is_not_a_frontal_chest(tmp_path: Path) -> None:
    """A real lower-leg CR whose body part tag was blanked, a photo, a CT slice and a
    lateral view: each refused with one line saying so, never analysed."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _without_body_part(DICOM_SAMPLES / "RG3_J2KR.dcm", inputs / "leg.dcm")
    import skimage.data

    Image.fromarray(skimage.data.astronaut()).save(inputs / "astronaut.png")
    tests = [r for r in _v7_rows() if r["split"] == "test"]
    for kind, modality in (("ct", "CT"), ("lateral", "X-ray")):
        row = next(r for r in tests if r["is_frontal_cxr"] == "False"
                   and r["modality"] == modality)
        Image.open(V7 / row["image"]).save(inputs / f"{kind}.png")
    result = subprocess.run([*CXR, "analyze", str(inputs), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, check=False, timeout=600,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    refusals = {line.split(":")[0].removeprefix("refused "): line
                for line in result.stderr.splitlines() if line.startswith("refused")}
    assert set(refusals) == {"leg.dcm", "astronaut.png", "ct.png", "lateral.png"}
    assert all("not a frontal chest radiograph" in line for line in refusals.values())
    assert "lateral view" in refusals["lateral.png"]
    # never analysed: no output folder; the run's review list names each refusal
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["review.csv"]
    listed = {Path(row["input"]).name: row["status"]
              for row in csv.DictReader((out / "review.csv").open())}
    assert listed == dict.fromkeys(refusals, "refused")


def _v7_rows() -> list[dict[str, str]]:
    import csv

    with (V7 / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_turned_chest_is_refused(engine: Engine) -> None:
    radiograph = read_radiograph(RG1_UNCR)
    for turns in (1, 2, 3):
        radiograph.pixels = np.ascontiguousarray(np.rot90(read_radiograph(RG1_UNCR).pixels,
                                                          turns))
        with pytest.raises(RefusedInput, match="turn it upright|upside down"):
            engine.analyze(radiograph)


def _lung_columns(analysis) -> tuple[float, float]:
    return tuple(float(np.nonzero(analysis.segments[name].mask.any(axis=0))[0].mean())
                 for name in ("right_lung", "left_lung"))  # type: ignore[return-value]


def test_mirrored_pixels_take_their_sides_from_the_anatomy(engine: Engine) -> None:
    """Pixels mirrored, header unchanged (the realistic PACS error): the anatomy wins, the
    right lung is the patient's right, and a flag says why."""
    radiograph = read_radiograph(RG1_UNCR)
    radiograph.pixels = np.ascontiguousarray(radiograph.pixels[:, ::-1])
    analysis = engine.analyze(radiograph)
    assert QualityFlag.MIRRORED_BY_ANATOMY in analysis.quality_flags
    right, left = _lung_columns(analysis)
    assert right > left  # the patient's right lung is on the image's right now


def test_a_wrong_mirrored_header_is_overruled(engine: Engine) -> None:
    """Pixels in standard display but PatientOrientation R\\F: the anatomy wins."""
    radiograph = read_radiograph(RG1_UNCR)
    radiograph.mirrored = True
    analysis = engine.analyze(radiograph)
    assert QualityFlag.ORIENTATION_HEADER_OVERRULED in analysis.quality_flags
    assert QualityFlag.MIRRORED_ORIENTATION not in analysis.quality_flags
    right, left = _lung_columns(analysis)
    assert right < left


def test_test_patterns_never_get_lungs(engine: Engine) -> None:
    """Synthetic test patterns and pydicom's bundled test images: never analysed."""
    radiograph = read_radiograph(RG1_UNCR)
    images = [synthetic_image("pattern", 1000 + index) for index in range(10)]
    images += [s.load() for s in gate_samples(SHARED_DATA) if s.source == "pydicom_test_files"]
    for pixels in images:
        radiograph.pixels = np.asarray(pixels, dtype=np.float32)
        with pytest.raises(RefusedInput):
            engine.analyze(radiograph)


@pytest.mark.parametrize(("kind", "at_least"), [
    ("uniform_noise", 1.0), ("sparse", 1.0), ("document", 0.9), ("pattern", 0.8),
    ("shapes", 0.8), ("gradient", 0.7), ("smooth_noise", 0.6), ("limb", 0.5)])
def test_the_lungs_stage_backs_up_the_gate(kind: str, at_least: float) -> None:
    """Without the gate, the lungs stage still refuses most of what is not a chest
    (measured on 40 images of each kind the gate never trained on)."""
    engine = Engine(stages=("lungs",))
    radiograph = read_radiograph(RG1_UNCR)
    refused = 0
    for index in range(40):
        radiograph.pixels = synthetic_image(kind, 1000 + index, size=256)
        try:
            engine.analyze(radiograph)
        except RefusedInput as error:
            assert "no plausible lungs found" in str(error)
            refused += 1
    assert refused / 40 >= at_least
