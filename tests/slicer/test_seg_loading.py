"""Our DICOM-SEG (no Frame of Reference) loads onto its source radiograph."""

from __future__ import annotations

import numpy as np
import pytest
from SlicerCXRLib import scene_bridge
from SlicerCXRLib.export import model_output_masks, segmentation_masks

import cxr_core
from tests.conftest import RG1_UNCR
from tests.slicer.conftest import PNG_IMAGE, SIIM_DICOM


@pytest.fixture(scope="module")
def rg1_seg(engine, tmp_path_factory):
    """The SEG ``cxr analyze`` writes for RG1_UNCR, and the analysis behind it."""
    analysis = engine.analyze(cxr_core.read_radiograph(RG1_UNCR))
    path = tmp_path_factory.mktemp("rg1") / "seg.dcm"
    results = cxr_core.build_dicom_results(analysis.radiograph.source_dataset, analysis)
    results.seg.save_as(path, enforce_file_format=True)
    return path, analysis


def test_seg_loads_aligned_with_its_source_volume(logic, scene, rg1_seg):
    path, analysis = rg1_seg
    logic.load_radiograph(PNG_IMAGE)  # another image in the scene must not be picked
    volume = logic.load_radiograph(RG1_UNCR)

    segmentation = logic.load_seg(path)  # the volume is found by SOP Instance UID

    assert segmentation.GetNodeReference(
        "referenceImageGeometryRef") is volume
    masks, skipped = segmentation_masks(segmentation, volume)
    assert skipped == [] and set(masks) == set(analysis.segments)
    for name, segment in analysis.segments.items():
        np.testing.assert_array_equal(masks[name], segment.mask)
    # untouched model output: it is also recorded as what edits are measured against
    originals = model_output_masks(segmentation, volume)
    assert set(originals) == set(analysis.segments)
    model = analysis.segments["right_lung"].model_id.partition("@")[0]
    assert segmentation.GetAttribute(scene_bridge.MODEL_ATTRIBUTE).startswith(model)


def test_seg_without_its_source_loaded_is_refused(logic, rg1_seg):
    logic.load_radiograph(PNG_IMAGE)
    with pytest.raises(ValueError, match="load the SEG's source image"):
        logic.load_seg(rg1_seg[0])


def test_seg_on_another_dicom_image_is_refused(logic, rg1_seg):
    other = logic.load_radiograph(SIIM_DICOM)
    with pytest.raises(ValueError, match="is not the SEG's source image"):
        logic.load_seg(rg1_seg[0], other)


def test_seg_on_an_image_of_another_size_is_refused(logic, rg1_seg):
    other = logic.load_radiograph(PNG_IMAGE)  # no DICOM UID to compare: size decides
    with pytest.raises(ValueError, match="SEG masks are"):
        logic.load_seg(rg1_seg[0], other)
