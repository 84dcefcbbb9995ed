"""The label store on its own: validation, layout, atomic replacement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxr_core.training.data import LUNG_STRUCTURES, datalist_samples, read_mask
from cxr_core.writers.labelstore import LabelStore, edit_summary, image_key
from tests.slicer.conftest import gb_truth, path_of


@pytest.fixture
def case():
    from cxr_core import read_radiograph

    return read_radiograph(path_of("gb_001")).pixels, gb_truth("gb_001")


def _metadata(**overrides):
    return {"source_name": "gb_001", "exported_by": "dr-a", "model": "lung_seg@1.0.0"} | overrides


def test_keys_are_stable_and_distinct(case):
    pixels, _ = case
    assert image_key(pixels=pixels) == image_key(pixels=pixels.copy())
    assert image_key(pixels=pixels) != image_key(pixels=pixels[::-1])
    assert image_key(sop_instance_uid="1.2.3") != image_key(sop_instance_uid="1.2.4")
    with pytest.raises(ValueError, match="give sop_instance_uid or pixels"):
        image_key()


def test_edit_summary_counts_added_and_removed_pixels():
    before = np.zeros((4, 4), bool)
    before[:2] = True
    after = np.zeros((4, 4), bool)
    after[1:3] = True
    assert edit_summary({"heart": after, "left_lung": before},
                        {"heart": before, "left_lung": before}) == {
        "heart": {"added": 4, "removed": 4}}
    assert edit_summary({"heart": after}, {}) == {"heart": {"added": 8, "removed": 0}}


@pytest.mark.parametrize(("change", "message"), [
    ({"key": "../escape"}, "key: '../escape' is not a safe file stem"),
    ({"final_masks": {}}, "final_masks: at least one segment"),
    ({"final_masks": {"spleen": np.zeros((2, 2), bool)}}, "final_masks: unknown segment"),
    ({"final_masks": {"heart": np.zeros((2, 2), bool)}}, r"final_masks\['heart'\]: shape"),
    ({"metadata": _metadata(exported_by="")}, "metadata: 'exported_by' is required"),
    ({"metadata": _metadata(split="holdout")}, "metadata: split 'holdout'"),
])
def test_bad_writes_are_refused_with_the_argument_named(tmp_path, case, change, message):
    pixels, truth = case
    arguments = {"key": "k1", "pixels": pixels, "final_masks": truth, "original_masks": {},
                 "metadata": _metadata()} | change
    with pytest.raises(ValueError, match=message):
        LabelStore(tmp_path).write(**arguments)
    assert not (tmp_path / "datalist.json").exists()


def test_splits_and_removal(tmp_path, case):
    pixels, truth = case
    store = LabelStore(tmp_path)
    store.write(key="a", pixels=pixels, final_masks=truth, original_masks={},
                metadata=_metadata())
    store.write(key="b", pixels=pixels, final_masks={"heart": truth["heart"]},
                original_masks={}, metadata=_metadata(split="val"))
    samples = {s.key: s for s in datalist_samples(store.datalist_path, LUNG_STRUCTURES)}
    assert samples["a"].split == "train" and samples["b"].split == "val"
    assert set(samples["b"].masks) == {"heart"}  # lungs unknown for b, not empty
    np.testing.assert_array_equal(read_mask(samples["a"].masks["left_lung"]),
                                  truth["left_lung"])

    store.remove("b")
    document = json.loads(store.datalist_path.read_text())
    assert [e["id"] for e in document["training"]] == ["a"] and document["validation"] == []
    assert sorted(p.name for p in (tmp_path / "labels" / "final").iterdir()) == [
        f"a_{name}.png" for name in sorted(LUNG_STRUCTURES)]
    assert [e.key for e in store.entries()] == ["a"]
