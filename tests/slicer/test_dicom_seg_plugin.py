"""SlicerCXR's DICOM browser plugin, Qt-free half: it offers our radiograph SEGs (not the
images, not SEGs with a Frame of Reference) and loads one onto its radiograph, fetching
the radiograph from the database when it is not in the scene."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pydicom
import pytest
from SlicerCXRLib.dicom_seg import CONFIDENCE, examine_files, load_candidate
from SlicerCXRLib.export import segmentation_masks

import cxr_core
from tests.conftest import RG1_UNCR
from tests.slicer.conftest import MODULE_DIR

PLUGIN = MODULE_DIR / "DICOMSlicerCXRSegPlugin.py"


@pytest.fixture(scope="module")
def seg_file(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], str]:
    """A SEG of RG1_UNCR with two made-up lung masks (the writer, not the engine)."""
    radiograph = cxr_core.read_radiograph(RG1_UNCR)
    rows, columns = radiograph.shape
    masks = {"right_lung": np.zeros((rows, columns), bool),
             "left_lung": np.zeros((rows, columns), bool)}
    masks["right_lung"][400:1400, 200:800] = True
    masks["left_lung"][400:1400, 1000:1600] = True
    seg = cxr_core.build_seg(radiograph.source_dataset, masks, spacing=radiograph.spacing,
                             algorithm="lung_seg@1.0.0")
    path = tmp_path_factory.mktemp("plugin") / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    return path, masks, str(radiograph.source_dataset.SOPInstanceUID)


def test_offers_our_seg_and_nothing_else(seg_file, tmp_path) -> None:
    path, _, source_uid = seg_file
    with_frame_of_reference = tmp_path / "for.dcm"
    dataset = pydicom.dcmread(path)
    dataset.FrameOfReferenceUID = pydicom.uid.generate_uid()
    dataset.save_as(with_frame_of_reference)
    (not_dicom := tmp_path / "notes.txt").write_text("not DICOM")

    found = examine_files([str(path), str(RG1_UNCR), str(with_frame_of_reference),
                           str(not_dicom)])

    assert [c.files for c in found] == [[str(path)]]
    assert found[0].source_uid == source_uid
    assert found[0].confidence == CONFIDENCE > 0.95  # above QuantitativeReporting's (dcmqi)


def test_loads_onto_its_radiograph_fetched_from_the_database(scene, seg_file) -> None:
    path, masks, source_uid = seg_file
    (candidate,) = examine_files([str(path)])
    asked: list[str] = []

    def file_for_instance(uid: str) -> str:
        asked.append(uid)
        return str(RG1_UNCR)

    segmentation = load_candidate(scene, candidate, file_for_instance)

    assert asked == [source_uid]
    volume = segmentation.GetNodeReference("referenceImageGeometryRef")
    loaded, skipped = segmentation_masks(segmentation, volume)
    assert skipped == [] and set(loaded) == set(masks)
    for name, mask in masks.items():
        np.testing.assert_array_equal(loaded[name], mask)
    # a second load reuses the radiograph already in the scene
    load_candidate(scene, candidate, file_for_instance)
    assert asked == [source_uid]


def test_refuses_a_seg_whose_radiograph_is_nowhere(scene, seg_file) -> None:
    (candidate,) = examine_files([str(seg_file[0])])
    with pytest.raises(ValueError, match="neither loaded nor in the DICOM database"):
        load_candidate(scene, candidate, lambda uid: "")


def test_plugin_module_registers_with_the_dicom_module() -> None:
    source = PLUGIN.read_text()
    classes = {node.name for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}
    assert {"DICOMSlicerCXRSegPlugin", "DICOMSlicerCXRSegPluginClass"} <= classes
    assert "slicer.modules.dicomPlugins" in source
    assert "NAME DICOMSlicerCXRSegPlugin" in (MODULE_DIR / "CMakeLists.txt").read_text()
