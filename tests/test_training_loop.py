"""The one training loop and what a run carries over from its base card (fast: tiny
networks, synthetic tensors, copied cards)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from cxr_core.models import (
    ClassifierRules,
    LesionRule,
    ModelCard,
    Platt,
    PostProcess,
    RuntimeSettings,
    default_models_dir,
)
from cxr_core.stages.pneumothorax import DEFAULT_RULE
from cxr_core.training.augment import Augment
from cxr_core.training.data import SegmentationTensors
from cxr_core.training.loop import DiceValidation, TrainConfig, train
from cxr_core.training.pneumothorax import PtxTrainOptions
from cxr_core.training.provenance import (
    LIBRARIES,
    base_card,
    carried_description,
    dataset_source,
    library_versions,
    make_provenance,
    next_version,
    runtime_settings,
)


def _identity(images: torch.Tensor, targets: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return images, targets


class _Recorded(SegmentationTensors):
    """Remembers the size of every batch the loop trains on."""

    sizes: list[int]

    def batch(self, index: torch.Tensor, augment: Augment, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.sizes.append(len(index))
        return super().batch(index, augment, generator)


def _data(n: int) -> _Recorded:
    generator = torch.Generator().manual_seed(n)
    images = torch.rand(n, 1, 8, 8, generator=generator)
    data = _Recorded(images, (images > 0.5).float(), torch.ones(n, 1))
    data.sizes = []
    return data


def _config(**changes: object) -> TrainConfig:
    return TrainConfig(epochs=3, batch_size=2, augment=_identity, label="test").but(**changes)


def test_a_fine_tune_of_one_step_trains() -> None:
    """Two images, one epoch, one step: the warm-up guard keeps OneCycleLR working."""
    network = torch.nn.Conv2d(1, 1, 3, padding=1)
    network, history = train(network, _data(2), _data(2), _config(epochs=1, batch_size=8))
    assert len(history) == 1 and not network.training
    assert set(history[0]) >= {"epoch", "train_loss", "val_loss", "val_score",
                               "val_mean_dice", "val_dice_0", "minutes"}


def test_batches_below_the_minimum_are_skipped() -> None:
    data = _data(5)
    train(torch.nn.Conv2d(1, 1, 3, padding=1), data, _data(2),
          _config(epochs=1, min_batch_size=2))
    assert data.sizes == [2, 2]  # the fifth image alone would break batch norm
    data = _data(5)
    train(torch.nn.Conv2d(1, 1, 3, padding=1), data, _data(2), _config(epochs=1))
    assert data.sizes == [2, 2, 1]


def test_weighted_sampling_draws_full_batches() -> None:
    data = _data(5)
    weights = torch.tensor([1.0, 0, 0, 0, 0])
    train(torch.nn.Conv2d(1, 1, 3, padding=1), data, _data(2),
          _config(epochs=1, sample_weights=weights))
    assert data.sizes == [2, 2, 2]


def test_early_stop_keeps_the_best_epoch() -> None:
    scores = iter([0.5, 0.9, 0.1, 0.2, 0.3])
    states: list[dict[str, torch.Tensor]] = []
    network = torch.nn.Conv2d(1, 1, 3, padding=1)

    def validation(logits: torch.Tensor, targets: torch.Tensor,
                   known: torch.Tensor) -> tuple[float, dict[str, float]]:
        states.append({k: v.clone() for k, v in network.state_dict().items()})
        return next(scores), {}

    trained, history = train(network, _data(4), _data(2),
                             _config(epochs=5, patience=2, validation=validation))
    assert [h["val_score"] for h in history] == [0.5, 0.9, 0.1, 0.2]  # 2 epochs past the best
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(value, states[1][key])


def test_time_cap_stops_after_the_epoch_that_reaches_it() -> None:
    _, history = train(torch.nn.Conv2d(1, 1, 3, padding=1), _data(4), _data(2),
                       _config(epochs=5, max_minutes=0.0, validation=DiceValidation()))
    assert len(history) == 1


# ----------------------------------------------------------------- provenance


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models folder holding copies of the shipped pneumothorax and lung cards (no
    weights: base cards are read, never loaded)."""
    folder = tmp_path / "models"
    for name in ("pneumothorax", "lung_seg"):
        (folder / name).mkdir(parents=True)
        shutil.copy(default_models_dir() / name / "model.json", folder / name / "model.json")
    monkeypatch.setenv("CXR_MODELS_DIR", str(folder))
    return folder


def test_base_card_is_the_same_model_else_the_shipped_one(models_dir: Path) -> None:
    shipped = base_card("pneumothorax")
    assert shipped is not None and shipped.name == "pneumothorax"
    # lung_seg only lends weights to a pneumothorax model: its card is not the base
    lent = base_card("pneumothorax", init_from=models_dir / "lung_seg")
    assert lent is not None and lent.name == "pneumothorax"
    fine_tuned = base_card("lung_seg", init_from=models_dir / "lung_seg")
    assert fine_tuned is not None and fine_tuned.name == "lung_seg"
    assert base_card("a_new_model") is None


def test_versions_move_on_from_the_base() -> None:
    card = ModelCard.load(default_models_dir() / "pneumothorax" / "model.json")
    assert card.version == "1.2.0"
    assert next_version(card, None) == "1.3.0"
    assert next_version(card, "2.0.0") == "2.0.0"
    assert next_version(None, None) == "1.0.0"


def test_description_is_carried_or_a_default_says_it_was_not_reviewed() -> None:
    card = ModelCard.load(default_models_dir() / "pneumothorax" / "model.json")
    carried = carried_description(card, "pneumothorax", "segmentation")
    assert carried == card.description
    carried.limitations.append("changed")
    assert "changed" not in card.description.limitations  # a copy
    new = carried_description(None, "ribs", "segmentation")
    assert "ribs" in new.intended_use and "Research use only" in new.licence
    assert "No reviewed description" in new.limitations[0]


def test_fitted_settings_replace_the_base_and_the_rest_is_kept() -> None:
    base = ModelCard.load(default_models_dir() / "findings" / "model.json")
    base.runtime.postprocess = PostProcess(method="min_component", min_component_fraction=0.1)
    fitted = ClassifierRules(input="lung_masked", calibration={"abnormal": Platt(scale=2.0)},
                             thresholds={"abnormal": 0.7})
    runtime = runtime_settings(fitted=RuntimeSettings(classifier=fitted), base=base,
                               default=RuntimeSettings(classifier=ClassifierRules()))
    assert runtime.classifier == fitted and runtime.postprocess == base.runtime.postprocess
    fresh = runtime_settings(fitted=RuntimeSettings(), base=None,
                             default=RuntimeSettings(lesion=DEFAULT_RULE))
    assert fresh.lesion == DEFAULT_RULE and fresh.classifier is None


def test_lesion_flags_override_one_field_each(models_dir: Path) -> None:
    card_path = models_dir / "pneumothorax" / "model.json"
    data = json.loads(card_path.read_text())
    data["runtime"]["lesion"]["min_area_fraction"] = 0.002
    card_path.write_text(json.dumps(data))
    base = base_card("pneumothorax")
    assert base is not None and base.runtime.lesion is not None
    assert PtxTrainOptions().explicit_runtime(base) == RuntimeSettings()  # nothing told
    told = PtxTrainOptions(min_area_mm2=500.0, min_component_fraction=0.01)
    runtime = told.explicit_runtime(base)
    assert runtime.lesion == dataclasses.replace(base.runtime.lesion, min_area_mm2=500.0)
    assert runtime.lesion.min_area_fraction == 0.002
    assert runtime.postprocess == PostProcess(method="min_component", min_component_fraction=0.01)
    assert PtxTrainOptions(thorax_min_inside=0.7).explicit_runtime(None).lesion == LesionRule(
        **(dataclasses.asdict(DEFAULT_RULE) | {"thorax_min_inside": 0.7}))


def test_provenance_names_code_libraries_and_cited_sources(shared_data: Path) -> None:
    source = dataset_source(shared_data, "nih_cxr14_normal_pneumonia", "at most 5 per split")
    assert source.startswith("../shared/data/nih_cxr14_normal_pneumonia/SOURCE.md (X. Wang")
    assert source.endswith("; at most 5 per split)")
    assert set(library_versions()) == set(LIBRARIES)
    assert library_versions()["torch"].split("+")[0] == torch.__version__.split("+")[0]
    provenance = make_provenance(command="cxr train x", datasets=[source], counts={"train": 1},
                                 selection="all", seed=0, minutes=1.234, epochs_run=2)
    assert provenance.minutes == 1.2 and provenance.commit and provenance.libraries
