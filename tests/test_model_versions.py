"""Model versions: the guard rail on promotion, kept versions, rollback, pinned engines.

A real "worse fine-tune": the shipped lung model's weights with noise added, scored on
the same held-out images as its parent (a few General Blockchain test images).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_core import Engine, read_radiograph
from cxr_core.cli import main as cxr_main
from cxr_core.cli.models import PromotionRefused, promote, rollback
from cxr_core.models import ModelCard
from cxr_core.models.card import file_sha256
from cxr_core.models.versions import archived_versions, pinned_models_dir, promotions
from cxr_core.segmentation import Segmenter
from cxr_core.training.data import shared_lung_samples
from cxr_core.training.lung import evaluate_lung
from tests.conftest import REPO, SHARED_DATA

SHIPPED = REPO / "resources" / "models" / "lung_seg"
HELD_OUT = 4
IMAGE = SHARED_DATA / "covid_cxr_gb_lr_lungs" / "images" / "gb_084.png"


def _held_out() -> list:
    return [s for s in shared_lung_samples(SHARED_DATA)
            if s.split == "test" and s.source == "covid_cxr_gb_lr_lungs"][:HELD_OUT]


def _score(folder: Path, tmp_path: Path) -> None:
    """Put this model's figures on the shared held-out images into its card."""
    segmenter = Segmenter.load(folder)
    card = ModelCard.load(folder / "model.json")
    card.evaluation = evaluate_lung(segmenter, _held_out(), tmp_path / "eval", montage_count=0)
    card.evaluation["evaluated_by"] = "test"
    card.save(folder / "model.json")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """A models folder with lung_seg 1.0.0 active, and a noisier 1.1.0 run."""
    root = tmp_path_factory.mktemp("versions")
    models = root / "models"
    shutil.copytree(SHIPPED, models / "lung_seg")
    _score(models / "lung_seg", root)
    run = root / "run"
    shutil.copytree(SHIPPED, run)
    state = torch.load(run / "weights.pt", map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for key, value in state.items():
        if value.is_floating_point() and value.ndim == 4:  # convolution kernels
            state[key] = value + 0.35 * value.std() * torch.randn(value.shape,
                                                                 generator=generator)
    torch.save(state, run / "weights.pt")
    card = ModelCard.load(run / "model.json")
    card.version, card.provenance.parent_model = "1.1.0", "lung_seg@1.0.0"
    card.weights_sha256 = file_sha256(run / "weights.pt")
    card.save(run / "model.json")
    _score(run, root)
    return models, run


def _dice(folder: Path) -> float:
    return ModelCard.load(folder / "model.json").evaluation["per_structure"]["both_lungs"][
        "dice_mean"]


def test_a_worse_fine_tune_is_refused_then_forced_then_rolled_back(setup, capsys) -> None:
    models, run = setup
    original_sha = file_sha256(models / "lung_seg" / "weights.pt")
    assert _dice(run) < _dice(models / "lung_seg")  # the premise: the run really is worse

    with pytest.raises(PromotionRefused, match=r"worse than .* of lung_seg@1\.0\.0.*--force"):
        promote(run, models_dir=models)
    assert ModelCard.load(models / "lung_seg" / "model.json").version == "1.0.0"
    assert cxr_main(["models", "promote", str(run), "--models-dir", str(models)]) == 2
    assert "held-out per_structure.both_lungs.dice_mean" in capsys.readouterr().err

    promote(run, models_dir=models, force=True)
    assert ModelCard.load(models / "lung_seg" / "model.json").version == "1.1.0"
    assert archived_versions(models, "lung_seg") == ["1.0.0", "1.1.0"]
    event = promotions(models, "lung_seg")[-1]
    assert event["forced"] and event["replaced"] == "1.0.0" and "worse" in event["reason"]
    assert cxr_main(["models", "list", "--models-dir", str(models)]) == 0
    assert "kept versions: 1.0.0, 1.1.0 (active 1.1.0; parent lung_seg@1.0.0)" in (
        capsys.readouterr().out)

    back = rollback("lung_seg", models_dir=models)
    assert back.version == "1.0.0"
    assert file_sha256(models / "lung_seg" / "weights.pt") == original_sha
    with pytest.raises(PromotionRefused, match="not available"):
        rollback("lung_seg", to="0.1.0", models_dir=models)


def test_a_pinned_engine_reproduces_the_older_version(setup) -> None:
    models, run = setup
    if ModelCard.load(models / "lung_seg" / "model.json").version != "1.1.0":
        promote(run, models_dir=models, force=True)
    radiograph = read_radiograph(IMAGE)
    pinned = Engine(models_dir=models, stages=("lungs",), pins={"lung_seg": "1.0.0"})
    shipped = Engine(models_dir=SHIPPED.parent, stages=("lungs",))
    active = Engine(models_dir=models, stages=("lungs",))
    assert [c.identifier for c in pinned.cards] == ["lung_seg@1.0.0"]
    assert [c.identifier for c in active.cards] == ["lung_seg@1.1.0"]
    old, again, new = (e.analyze(radiograph) for e in (pinned, shipped, active))
    for name in ("right_lung", "left_lung"):
        assert np.array_equal(old.segments[name].mask, again.segments[name].mask)
        assert old.segments[name].model_id == "lung_seg@1.0.0"
    assert any(not np.array_equal(old.segments[n].mask, new.segments[n].mask)
               for n in ("right_lung", "left_lung"))
    with pytest.raises(FileNotFoundError, match="lung_seg@0.9.0 is not available"):
        pinned_models_dir(models, "lung_seg", "0.9.0")
    with pytest.raises(ValueError, match="runs no model"):
        Engine(models_dir=models, stages=("lungs",), pins={"findings": "1.0.0"})


def test_analyze_refuses_a_pin_it_cannot_honour(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run([sys.executable, "-m", "cxr_core.cli", "analyze", str(IMAGE),
                             "--out", str(tmp_path), "--pin", "lung_seg@0.0.1"],
                            capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "lung_seg@0.0.1 is not available" in result.stderr
