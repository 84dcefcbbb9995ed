"""Export: corrected segmentation -> label store entry + semi-automatic DICOM-SEG."""

from __future__ import annotations

import json

import numpy as np
import pytest
from SlicerCXRLib import scene_bridge
from SlicerCXRLib.export import segmentation_masks

from cxr_core import read_radiograph, read_seg
from cxr_core.training.data import LUNG_STRUCTURES, datalist_samples, read_mask
from tests.conftest import RG1_UNCR
from tests.slicer.conftest import PNG_IMAGE, gb_truth


def _edit(segmentation, volume, name: str, mask: np.ndarray) -> None:
    """What Segment Editor does: replace the segment's labelmap."""
    scene_bridge.add_segment(segmentation, name, mask, volume)


def test_export_png_writes_store_entry_with_edits(logic, tmp_path):
    volume = logic.load_radiograph(PNG_IMAGE)
    segmentation = logic.analyze(volume).segmentation
    model_masks = {n: s.mask for n, s in logic.analyses[volume.GetID()].segments.items()}
    truth = gb_truth("gb_000")
    _edit(segmentation, volume, "right_lung", truth["right_lung"])

    result = logic.export(segmentation, volume, tmp_path / "store", user="dr-a")

    entry = result.entry
    assert entry.exported_by == "dr-a" and entry.model.startswith("lung_seg@")
    # every structure the engine segmented (pneumothorax too, when the model found one)
    assert entry.segments == list(model_masks)
    assert set(entry.edited) == {"right_lung"}  # the others are untouched model output
    change = truth["right_lung"] ^ model_masks["right_lung"]
    assert sum(entry.edited["right_lung"].values()) == int(change.sum())
    assert result.seg_path is None  # an image file has no DICOM header to derive from
    store = tmp_path / "store"
    np.testing.assert_array_equal(
        read_mask(store / entry.files["final:right_lung"]), truth["right_lung"])
    np.testing.assert_array_equal(
        read_mask(store / entry.files["original:right_lung"]), model_masks["right_lung"])
    # the stored image is the radiograph (16-bit, same order of values)
    stored = read_radiograph(store / entry.files["image"]).pixels
    source = read_radiograph(PNG_IMAGE).pixels
    assert stored.shape == source.shape
    assert np.corrcoef(stored.ravel(), source.ravel())[0, 1] > 0.9999

    samples = datalist_samples(store / "datalist.json", LUNG_STRUCTURES)
    assert len(samples) == 1 and samples[0].split == "train"
    assert set(samples[0].masks) == set(LUNG_STRUCTURES)
    assert samples[0].masks["right_lung"] == (store / entry.files["final:right_lung"]).resolve()
    assert not list(store.rglob("*.tmp"))


def test_re_export_replaces_the_entry(logic, tmp_path):
    store = tmp_path / "store"
    volume = logic.load_radiograph(PNG_IMAGE)
    segmentation = logic.analyze(volume).segmentation
    first = logic.export(segmentation, volume, store, user="dr-a").entry

    # the reader then deletes the heart segment and redraws the left lung
    segmentation.GetSegmentation().RemoveSegment("heart")
    truth = gb_truth("gb_000")
    _edit(segmentation, volume, "left_lung", truth["left_lung"])
    second = logic.export(segmentation, volume, store, user="dr-b").entry

    assert second.key == first.key
    document = json.loads((store / "datalist.json").read_text())
    assert len(document["training"]) == 1
    assert "heart" not in document["training"][0]  # unknown now, not empty
    assert not (store / first.files["final:heart"]).exists()
    assert second.exported_by == "dr-b" and set(second.edited) == {"left_lung"}
    assert len(list((store / "entries").glob("*.json"))) == 1
    np.testing.assert_array_equal(
        read_mask(store / second.files["final:left_lung"]), truth["left_lung"])


def test_export_dicom_writes_semi_automatic_seg(logic, tmp_path):
    volume = logic.load_radiograph(RG1_UNCR)
    segmentation = logic.analyze(volume).segmentation
    masks, _ = segmentation_masks(segmentation, volume)
    corrected = masks["left_lung"].copy()
    lung_rows = np.nonzero(corrected.any(axis=1))[0]
    corrected[:lung_rows[len(lung_rows) // 4]] = False  # trim the apex
    assert (corrected != masks["left_lung"]).any()
    scene_bridge.add_segment(segmentation, "left_lung", corrected, volume)

    result = logic.export(segmentation, volume, tmp_path / "store", user="dr-a")

    content = read_seg(result.seg_path)
    assert set(content.algorithm_types.values()) == {"SEMIAUTOMATIC"}
    np.testing.assert_array_equal(content.masks["left_lung"], corrected)
    radiograph = read_radiograph(RG1_UNCR)
    assert content.source_sop_instance_uid == str(radiograph.source_dataset.SOPInstanceUID)
    assert result.entry.source_sop_instance_uid == content.source_sop_instance_uid
    assert set(result.entry.edited) == {"left_lung"}

    again = logic.export(segmentation, volume, tmp_path / "store", user="dr-a")
    assert again.entry.key == result.entry.key
    assert read_seg(again.seg_path).masks.keys() == content.masks.keys()


def test_export_reads_edits_outside_the_original_extent(logic, tmp_path):
    """Segment Editor may crop or grow a segment's labelmap; export resamples it."""
    import slicer
    import vtk

    volume = logic.load_radiograph(PNG_IMAGE)
    segmentation = logic.analyze(volume).segmentation
    # a labelmap of only 20x30 voxels, placed by its extent inside the image
    small = slicer.vtkOrientedImageData()
    small.SetExtent(100, 119, 50, 79, 0, 0)
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    small.SetImageToWorldMatrix(matrix)
    small.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    small.GetPointData().GetScalars().Fill(1)
    logic_class = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic_class.SetBinaryLabelmapToSegment(small, segmentation, "heart",
                                                  logic_class.MODE_REPLACE)

    masks, _ = segmentation_masks(segmentation, volume)
    expected = np.zeros_like(masks["heart"])
    expected[50:80, 100:120] = True  # rows are IJK j, columns IJK i
    np.testing.assert_array_equal(masks["heart"], expected)


def test_export_without_our_segments_is_refused(logic, scene, tmp_path):
    volume = logic.load_radiograph(PNG_IMAGE)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentation.GetSegmentation().AddEmptySegment("nodule", "Nodule")
    with pytest.raises(ValueError, match="has none of the segments"):
        logic.export(segmentation, volume, tmp_path / "store", user="dr-a")


def test_added_segment_is_skipped_and_reported(logic, tmp_path):
    volume = logic.load_radiograph(PNG_IMAGE)
    segmentation = logic.analyze(volume).segmentation
    segmentation.GetSegmentation().AddEmptySegment("nodule", "Nodule")
    result = logic.export(segmentation, volume, tmp_path / "store", user="dr-a")
    assert result.skipped_segments == ["Nodule"]
    assert result.entry.segments == list(logic.analyses[volume.GetID()].segments)
