"""The shipped lung model: its card, and its quality on the shared test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from cxr_core.models import default_models_dir, load_model
from cxr_core.models.card import file_sha256
from cxr_core.segmentation import Segmenter
from cxr_core.training.data import shared_lung_samples
from cxr_core.training.lung import evaluate_lung

MARGIN = 0.01


def test_card_matches_weights() -> None:
    network, card = load_model("lung_seg")
    directory = default_models_dir() / "lung_seg"
    assert file_sha256(directory / card.weights_file) == card.weights_sha256
    assert (directory / card.weights_file).stat().st_size < 5 * 1024 * 1024
    assert card.labels == ["right_lung", "left_lung", "heart"]
    command = card.provenance.command
    assert command.startswith("cxr ") and " train lung" in command
    assert sum(p.numel() for p in network.parameters()) > 0


def test_dice_on_test_split_matches_card(shared_data: Path, tmp_path: Path) -> None:
    segmenter = Segmenter.load("lung_seg")
    samples = [s for s in shared_lung_samples(shared_data) if s.split == "test"]
    metrics = evaluate_lung(segmenter, samples, tmp_path)
    claimed = segmenter.card.evaluation["per_structure"]
    for name, measured in metrics["per_structure"].items():
        assert measured["dice_mean"] >= claimed[name]["dice_mean"] - MARGIN, name
    assert metrics["per_structure"]["both_lungs"]["dice_mean"] >= 0.93
    assert (tmp_path / "montage.png").is_file()


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_splits_are_patient_disjoint_across_sets(shared_data: Path, split: str) -> None:
    import csv

    def patients(folder: str, wanted: str) -> set[str]:
        with (shared_data / folder / "manifest.csv").open(newline="") as handle:
            return {r["patient_id"] for r in csv.DictReader(handle) if r["split"] == wanted}

    for folder in ("covid_cxr_v7lungs", "covid_cxr_gb_lr_lungs"):
        others = {s for s in ("train", "val", "test") if s != split}
        assert not patients(folder, split) & set().union(*(patients(folder, o) for o in others))


def _former_clean(segmenter: Segmenter, probabilities: torch.Tensor) -> torch.Tensor:
    """The former post-processing (torch masked writes, iterative hole filling)."""
    cleaned = probabilities.clone()
    labels = segmenter.card.labels
    right, left = labels.index("right_lung"), labels.index("left_lung")
    right_wins = cleaned[right] >= cleaned[left]
    cleaned[left][right_wins] = torch.minimum(cleaned[left][right_wins], torch.tensor(0.499))
    cleaned[right][~right_wins] = torch.minimum(cleaned[right][~right_wins],
                                                torch.tensor(0.499))
    for channel in range(cleaned.shape[0]):
        keep = segmenter._components_to_keep(cleaned[channel].numpy() > 0.5)
        holes = ndimage.binary_fill_holes(keep) & ~keep
        cleaned[channel][torch.from_numpy(holes)] = 1.0
        keep = ndimage.binary_dilation(keep | holes, iterations=1)
        cleaned[channel][~torch.from_numpy(keep)] = 0.0
    return cleaned


def test_post_processing_equals_the_former_one(shared_data: Path) -> None:
    """Overlaps, components, holes (labelled once) and the margin: the same probabilities
    bit for bit as the former torch/iterative code, on real radiographs from three sources
    and on masks with holes at the image's edges."""
    from cxr_core.io import read_radiograph
    from cxr_core.segmentation import _holes

    segmenter = Segmenter.load("lung_seg")
    paths = [shared_data / "dicom_samples" / "RG1_UNCR.dcm",
             *sorted((shared_data / "covid_cxr_v7lungs" / "images").iterdir())[:2],
             *sorted((shared_data / "nih_cxr14_multilabel" / "images").rglob("*.png"))[:2]]
    for path in paths:
        probabilities = segmenter.probabilities(read_radiograph(path).pixels)
        former = _former_clean(segmenter, probabilities)
        assert torch.equal(segmenter._clean(probabilities), former), path
    generator = np.random.default_rng(0)
    for _ in range(100):
        mask = ndimage.binary_opening(generator.random((40, 30)) > generator.uniform(0.2, 0.7))
        np.testing.assert_array_equal(mask | _holes(mask), ndimage.binary_fill_holes(mask))
