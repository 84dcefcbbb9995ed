"""``cxr train`` / ``cxr evaluate``: runs go to run folders, retraining keeps what people set
on the base card, and ``--write-card`` makes a new model folder instead of rewriting one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cxr_core.cli import build_parser
from cxr_core.cli import main as cxr_main
from cxr_core.cli.train import FINDINGS, LUNG, PNEUMOTHORAX, TaskDefaults, out_folder
from cxr_core.models import LesionRule, ModelCard, default_models_dir, load_history, load_model
from tests.test_pneumothorax import _png_folder

EDITED_LESION = {"min_area_mm2": 321.0, "min_area_fraction": 0.003,
                 "thorax_margin_fraction": 0.03, "thorax_min_inside": 0.4}


@pytest.fixture(scope="module")
def site(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ptx") / "site"
    _png_folder(shared_data, folder, 12)
    return folder


@pytest.mark.parametrize("task, defaults", [("lung", LUNG), ("findings", FINDINGS),
                                            ("pneumothorax", PNEUMOTHORAX)])
def test_training_writes_a_run_folder_unless_told(task: str, defaults: TaskDefaults) -> None:
    args = build_parser().parse_args(["train", task])
    assert args.out is None and args.version is None
    out = out_folder(args, defaults)
    assert out.parts[0] == "runs" and out.name.startswith(f"{defaults.model}-")
    assert (args.epochs, args.batch_size, args.learning_rate, args.patience,
            args.max_minutes, args.seed) == (defaults.epochs, defaults.batch_size,
                                            defaults.learning_rate, defaults.patience,
                                            defaults.max_minutes, 0)
    told = build_parser().parse_args(["train", task, "--out", "somewhere"])
    assert out_folder(told, defaults) == Path("somewhere")


@pytest.mark.parametrize("task", ["lung", "pneumothorax"])
def test_datalist_repeats(task: str) -> None:
    args = build_parser().parse_args(["train", task, "--datalist", "a.json",
                                      "--datalist", "b.json"])
    assert args.datalist == [Path("a.json"), Path("b.json")]


def test_runtime_flags_default_to_not_told() -> None:
    args = build_parser().parse_args(["train", "pneumothorax"])
    assert all(getattr(args, name) is None for name in (
        "min_area_mm2", "min_area_fraction", "thorax_margin_fraction", "thorax_min_inside",
        "min_component_fraction"))
    assert build_parser().parse_args(["train", "findings"]).lung_mask_dilation is None


def test_bad_flag_combinations_are_refused(tmp_path: Path) -> None:
    shipped = default_models_dir() / "lung_seg" / "model.json"
    before = shipped.read_bytes()
    for argv in (["evaluate", "lung", "--split", "val", "--out", str(tmp_path), "--write-card"],
                 ["evaluate", "lung", "--out", str(shipped.parent), "--write-card"],
                 ["train", "lung", "--datalist-only"],
                 ["train", "findings", "--nih-table", "t.csv"]):
        with pytest.raises(SystemExit) as refused:
            cxr_main(argv)
        assert refused.value.code == 2, argv
    assert shipped.read_bytes() == before


def test_retrain_keeps_a_hand_edited_lesion_rule_unless_a_flag_sets_it(
        site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped card's decision rule and description (edited by hand here) survive a
    retrain; an explicit flag overrides only its own field. Then ``cxr evaluate
    --write-card`` turns the run into a promotable model folder without touching it."""
    models = tmp_path / "models"
    shutil.copytree(default_models_dir() / "pneumothorax", models / "pneumothorax")
    card_path = models / "pneumothorax" / "model.json"
    data = json.loads(card_path.read_text())
    data["runtime"]["lesion"] = EDITED_LESION
    data["description"]["intended_use"] += " Edited by hand."
    card_path.write_text(json.dumps(data))
    base = ModelCard.load(card_path)
    monkeypatch.setenv("CXR_MODELS_DIR", str(models))
    common = ["train", "pneumothorax", "--no-shared", "--folder", str(site), "--size", "64",
              "--epochs", "2", "--lung-model", ""]

    assert cxr_main([*common, "--out", str(tmp_path / "kept")]) == 0
    _, kept = load_model(tmp_path / "kept")
    assert kept.runtime.lesion == LesionRule(**EDITED_LESION)
    assert kept.runtime.postprocess == base.runtime.postprocess
    assert kept.description == base.description
    assert kept.version == "1.3.0" and kept.provenance.parent_model is None
    assert len(load_history(tmp_path / "kept")) == kept.provenance.epochs_run == 2
    assert "torch" in kept.provenance.libraries
    assert kept.evaluation["evaluated_by"].startswith("cxr train pneumothorax")

    told = tmp_path / "told"
    assert cxr_main([*common, "--init-from", str(models / "pneumothorax"), "--min-area-mm2",
                     "500", "--out", str(told)]) == 0
    _, overridden = load_model(told)
    assert overridden.runtime.lesion == LesionRule(**EDITED_LESION | {"min_area_mm2": 500.0})
    assert overridden.provenance.parent_model == base.identifier
    assert overridden.description == base.description

    card_before = (told / "model.json").read_bytes()
    evaluated = tmp_path / "evaluated"
    assert cxr_main(["evaluate", "pneumothorax", "--no-shared", "--folder", str(site),
                     "--model", str(told), "--lung-model", "", "--bootstrap", "50",
                     "--out", str(evaluated), "--write-card"]) == 0
    assert (told / "model.json").read_bytes() == card_before
    _, written = load_model(evaluated)  # the weights came along and match the card
    assert written.evaluation["evaluated_by"] == "cxr evaluate pneumothorax --write-card"
    assert written.evaluation["limits"].startswith("Trained on")
    assert written.runtime == overridden.runtime and written.identifier == overridden.identifier
    assert load_history(evaluated) == load_history(told)
    assert (evaluated / "training_curves.png").is_file()
    from cxr_core.cli.models import check_model_folder

    assert check_model_folder(evaluated).identifier == overridden.identifier
