"""Model cards: the schema every shipped card meets, typed parsing that names the bad
field, runtime settings the engine really reads, and ``cxr models`` (list, validate,
promote a run into the models folder)."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest

from cxr_core.cli import main as cxr_main
from cxr_core.cli.models import PromotionRefused, promote
from cxr_core.models import (
    CardError,
    ClassifierRules,
    Description,
    ModelCard,
    NetworkSpec,
    Provenance,
    RuntimeSettings,
    default_models_dir,
    load_history,
)
from cxr_core.models.card import upgrade_legacy
from cxr_core.segmentation import Segmenter
from tests.conftest import REPO

MODELS = REPO / "resources" / "models"
SCHEMA = json.loads((MODELS / "model-card.schema.json").read_text())
SHIPPED = ("lung_seg", "findings", "pneumothorax")


def _card_json(name: str) -> dict:
    return json.loads((MODELS / name / "model.json").read_text())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cards_meet_the_schema_and_round_trip(name: str) -> None:
    data = _card_json(name)
    jsonschema.validate(data, SCHEMA)
    assert ModelCard.from_dict(data).to_dict() == data  # nothing lost, nothing added
    assert load_history(MODELS / name), "the per-epoch history lives beside the weights"


def test_schema_and_dataclasses_name_the_same_fields() -> None:
    def fields(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    properties = SCHEMA["properties"]
    assert set(properties) == fields(ModelCard) | {"schema_version"}
    for key, cls in (("network", NetworkSpec), ("provenance", Provenance),
                     ("description", Description), ("runtime", RuntimeSettings)):
        assert set(properties[key]["properties"]) == fields(cls), key
    classifier = properties["runtime"]["properties"]["classifier"]["properties"]
    assert set(classifier) == fields(ClassifierRules)


@pytest.mark.parametrize(("path", "value", "message"), [
    (("runtime", "classifier", "thresholds", "abnormal"), "high",
     "runtime.classifier.thresholds.abnormal: expected int or float, got str"),
    (("network", "input_size"), [224], "network.input_size: expected two positive integers"),
    (("task",), "detection", "task: 'detection' is not one of"),
    (("provenance", "seed"), True, "provenance.seed: expected int, got a boolean"),
    (("runtime", "classifier", "input"), "lungs", "runtime.classifier.input: 'lungs'"),
])
def test_a_wrong_field_is_named(path: tuple[str, ...], value: object, message: str) -> None:
    data = _card_json("findings")
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(CardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelCard.from_dict(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)


def test_a_missing_field_is_named() -> None:
    data = _card_json("pneumothorax")
    del data["description"]["intended_use"]
    with pytest.raises(CardError, match="description.intended_use: missing"):
        ModelCard.from_dict(data)


def test_cards_in_the_first_layout_still_load() -> None:
    """Models a hospital trained before the schema keep working."""
    card = ModelCard.from_dict(_card_json("pneumothorax"))
    legacy = {
        "name": card.name, "version": card.version, "task": card.task,
        "architecture": card.network.architecture, "network_kwargs": card.network.kwargs,
        "input_size": list(card.input_size), "labels": card.labels,
        "weights_file": card.weights_file, "weights_sha256": card.weights_sha256,
        "normalization": "percentile_0.5_99.5_to_unit",
        "training": {"command": card.provenance.command, "commit": card.provenance.commit,
                     "datasets": card.provenance.datasets, "counts": card.provenance.counts,
                     "history": [{"epoch": 1}], "loss": "BCE"},
        "metrics": card.evaluation,
        "extra": {"postprocess": "min_component", "min_component_fraction": 0.001,
                  "min_area_mm2": 150.0, "min_area_fraction": 0.004,
                  "thorax_margin_fraction": 0.02, "thorax_min_inside": 0.5,
                  "limits": "tiny", "segments": {"pneumothorax": "Pneumothorax"}},
    }
    upgraded = ModelCard.from_dict(legacy)
    assert upgraded.runtime.lesion is not None and upgraded.runtime.lesion.min_area_mm2 == 150.0
    assert upgraded.runtime.postprocess == card.runtime.postprocess
    assert upgraded.provenance.details == {"loss": "BCE"}
    assert upgraded.evaluation["limits"] == "tiny"
    jsonschema.validate(upgraded.to_dict(), SCHEMA)  # saved again, it meets the schema
    assert upgrade_legacy(legacy)["schema_version"] == 2


def test_normalization_in_the_card_is_what_the_engine_uses(tmp_path: Path) -> None:
    folder = tmp_path / "lung_seg"
    shutil.copytree(MODELS / "lung_seg", folder)
    data = _card_json("lung_seg")
    data["network"]["normalization"] = {"method": "percentile", "low": 2.0, "high": 98.0}
    (folder / "model.json").write_text(json.dumps(data))
    assert Segmenter.load(folder).to_input.percentiles == (2.0, 98.0)
    assert Segmenter.load(MODELS / "lung_seg").to_input.percentiles == (0.5, 99.5)


def test_runtime_settings_fill_in_from_a_base() -> None:
    base = ModelCard.from_dict(_card_json("pneumothorax")).runtime
    fitted = RuntimeSettings(classifier=ClassifierRules(thresholds={"x": 0.2}))
    merged = fitted.over(base)
    assert merged.classifier == fitted.classifier
    assert merged.lesion == base.lesion and merged.postprocess == base.postprocess


# ----------------------------------------------------------------- cxr models


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """A copy of the shipped pneumothorax model, as a training run would leave it."""
    run = tmp_path / "runs" / "pneumothorax-20261129-000000"
    shutil.copytree(MODELS / "pneumothorax", run)
    return run


def test_promote_copies_a_checked_run(run_folder: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    target = promote(run_folder, models_dir=models)
    assert target == models / "pneumothorax"
    assert sorted(p.name for p in target.iterdir()) == sorted(
        p.name for p in run_folder.iterdir())
    assert not [p for p in models.iterdir() if p.name.startswith(".")]  # no staging left
    again = promote(run_folder, name="pneumothorax_local", models_dir=models)
    assert (again / "weights.pt").read_bytes() == (run_folder / "weights.pt").read_bytes()


def test_promote_refuses_weights_that_do_not_match(run_folder: Path, tmp_path: Path) -> None:
    weights = run_folder / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte
    weights.write_bytes(bytes(data))
    with pytest.raises(PromotionRefused, match="does not match the card's weights_sha256"):
        promote(run_folder, models_dir=tmp_path / "models")
    assert not (tmp_path / "models" / "pneumothorax").exists()


def test_promote_refuses_a_run_without_figures(run_folder: Path, tmp_path: Path) -> None:
    card = ModelCard.load(run_folder / "model.json")
    card.evaluation = {}
    card.save(run_folder / "model.json")
    with pytest.raises(PromotionRefused, match="no evaluation figures"):
        promote(run_folder, models_dir=tmp_path / "models")


def test_promote_refuses_an_invalid_card(run_folder: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads((run_folder / "model.json").read_text())
    broken = copy.deepcopy(data)
    broken["runtime"]["lesion"]["min_area_mm2"] = "large"
    (run_folder / "model.json").write_text(json.dumps(broken))
    code = cxr_main(["models", "promote", str(run_folder), "--models-dir",
                     str(tmp_path / "models")])
    assert code == 2
    assert "runtime.lesion.min_area_mm2: expected int or float" in capsys.readouterr().err


def test_models_list_and_validate(capsys: pytest.CaptureFixture[str]) -> None:
    assert cxr_main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(f"{name}@" in listed for name in SHIPPED)
    assert cxr_main(["models", "validate", str(MODELS / "lung_seg")]) == 0


def test_a_wheel_carries_the_models(tmp_path: Path) -> None:
    """A wheel install finds the shipped models inside the package."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path), str(REPO)], capture_output=True, text=True,
                           check=False, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(tmp_path.glob("slicercxr-*.whl"))
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    for name in SHIPPED:
        assert (unpacked / "cxr_core" / "shipped_models" / name / "weights.pt").is_file()
    code = ("import cxr_core.models as m; d = m.default_models_dir(); "
            "m.load_model('lung_seg'); print(d)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(unpacked), "PATH": ""},
                         check=False, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert Path(run.stdout.strip()) == unpacked / "cxr_core" / "shipped_models"
    assert default_models_dir() == MODELS  # this checkout reads resources/models itself
