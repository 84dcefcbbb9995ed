"""Volume -> Radiograph -> Analysis -> segmentation, heat map and table nodes (real MRML)."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from SlicerCXRLib import mrml, scene_bridge
from SlicerCXRLib.export import segmentation_masks

from cxr_core import (
    FINDING_CODES,
    SEGMENT_TYPES,
    Analysis,
    Finding,
    SpacingSource,
    read_radiograph,
)
from tests.conftest import RG1_UNCR
from tests.slicer.conftest import PNG_IMAGE, SIIM_DICOM


def _ras_centroid_x(segmentation, segment_id: str) -> float:
    """Mean RAS x of a segment's voxels, through the segment's own image-to-world matrix."""
    labelmap = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    extent = labelmap.GetExtent()
    from vtk.util import numpy_support

    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    _, j, i = np.nonzero(values.reshape(shape))
    ijk = (i.mean() + extent[0], j.mean() + extent[2], extent[4], 1.0)
    return matrix.MultiplyPoint(ijk)[0]


def test_png_volume_analysis_becomes_segments_with_terminology(logic, scene):
    volume = logic.load_radiograph(PNG_IMAGE)
    source = read_radiograph(PNG_IMAGE)
    assert mrml.radiograph_shape(volume) == source.shape
    np.testing.assert_array_equal(mrml.volume_pixels(volume), source.pixels)

    nodes = logic.analyze(volume)
    analysis = logic.analyses[volume.GetID()]
    segmentation = nodes.segmentation.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(analysis.segments)
    assert nodes.segmentation.GetNodeReference(
        slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is volume

    masks, skipped = segmentation_masks(nodes.segmentation, volume)
    assert skipped == []
    for name, segment in analysis.segments.items():
        np.testing.assert_array_equal(masks[name], segment.mask)  # rows/columns line up
        slicer_segment = segmentation.GetSegment(name)
        expected = SEGMENT_TYPES[name]
        assert slicer_segment.GetName() == expected.label
        terminology = slicer_segment.GetTerminology()
        assert f"SCT^{expected.property_type.value}^{expected.property_type.meaning}" in terminology
        if expected.modifier is not None:
            assert f"SCT^{expected.modifier.value}^{expected.modifier.meaning}" in terminology
        assert tuple(round(c * 255) for c in slicer_segment.GetColor()) == expected.rgb


def test_right_lung_is_on_the_patients_right_in_ras(logic):
    volume = logic.load_radiograph(PNG_IMAGE)
    segmentation = logic.analyze(volume).segmentation
    # RAS +x points to the patient's right; image-left is patient-right on a PA film.
    assert _ras_centroid_x(segmentation, "right_lung") > _ras_centroid_x(segmentation,
                                                                         "left_lung")


def test_dicom_volume_carries_header_and_spacing(logic):
    volume = logic.load_radiograph(SIIM_DICOM)
    assert volume.GetSpacing() == pytest.approx((0.168, 0.168, 1.0))
    radiograph = scene_bridge.volume_to_radiograph(volume)
    assert radiograph.is_dicom
    assert radiograph.spacing.source is SpacingSource.PIXEL_SPACING
    assert radiograph.spacing.row_mm == pytest.approx(0.168)
    analysis = logic.engine.analyze(radiograph)
    assert analysis.segments["right_lung"].area_mm2 == pytest.approx(
        analysis.segments["right_lung"].pixel_count * 0.168 ** 2)


def test_monochrome1_dicom_volume_shows_presentation_pixels(logic):
    volume = logic.load_radiograph(RG1_UNCR)
    expected = read_radiograph(RG1_UNCR)
    np.testing.assert_array_equal(mrml.volume_pixels(volume), expected.pixels)
    radiograph = scene_bridge.volume_to_radiograph(volume)
    assert str(radiograph.source_dataset.SOPInstanceUID) == volume.GetAttribute(
        scene_bridge.DICOM_UIDS_ATTRIBUTE)
    assert radiograph.spacing.source is SpacingSource.UNKNOWN  # its PixelSpacing is 0\0


def test_volume_without_a_file_uses_its_voxels_and_unknown_spacing(scene):
    source = read_radiograph(PNG_IMAGE)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "drawn")
    mrml.set_volume_pixels(volume, source.pixels)
    volume.SetSpacing(0.2, 0.2, 1.0)  # Slicer's default-looking spacing, not a measurement
    radiograph = scene_bridge.volume_to_radiograph(volume)
    np.testing.assert_array_equal(radiograph.pixels, source.pixels)
    assert radiograph.spacing.source is SpacingSource.UNKNOWN
    assert radiograph.source_dataset is None


def test_multi_slice_volume_is_refused(scene):
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
    image = vtk.vtkImageData()
    image.SetDimensions(64, 64, 3)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    volume.SetAndObserveImageData(image)
    with pytest.raises(ValueError, match="3 slices"):
        scene_bridge.volume_to_radiograph(volume)


def test_heat_map_volume_over_the_radiograph(logic, scene):
    volume = logic.load_radiograph(PNG_IMAGE)
    rows, columns = mrml.radiograph_shape(volume)
    yy, xx = np.mgrid[:rows, :columns]
    heat = np.exp(-((yy - rows / 3) ** 2 + (xx - columns / 4) ** 2) / (2 * 40.0 ** 2))
    finding = Finding("pneumonia", FINDING_CODES["pneumonia"], 0.8, 0.5, True,
                      heat.astype(np.float32))
    views = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    analysis = logic.engine.analyze(scene_bridge.volume_to_radiograph(volume))
    analysis.findings = [finding]  # a known map, in place of what the model found

    nodes = scene_bridge.show_analysis(scene, volume, analysis)

    heat_node = nodes.heatmaps["pneumonia"]
    np.testing.assert_allclose(mrml.volume_pixels(heat_node), heat, atol=1e-6)
    for getter in ("GetSpacing", "GetOrigin"):
        assert getattr(heat_node, getter)() == getattr(volume, getter)()
    display = heat_node.GetDisplayNode()
    assert display.GetColorNode().GetName() == scene_bridge.HEAT_COLOR_TABLE
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    lookup = display.GetColorNode().GetLookupTable()
    assert lookup.GetTableValue(0)[3] == 0.0 and lookup.GetTableValue(255)[3] == 1.0
    for view in views:
        assert view.GetBackgroundVolumeID() == volume.GetID()
        assert view.GetForegroundVolumeID() == heat_node.GetID()
        assert view.GetForegroundOpacity() == pytest.approx(scene_bridge.HEAT_OPACITY)


def test_heat_map_of_another_size_is_refused(logic, scene):
    volume = logic.load_radiograph(PNG_IMAGE)
    finding = Finding("abnormal", FINDING_CODES["abnormal"], 0.3, 0.5, False,
                      np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="heat map shape"):
        scene_bridge.heatmap_to_volume(scene, volume, finding)


def test_findings_and_measurements_table(logic, scene):
    volume = logic.load_radiograph(PNG_IMAGE)
    analysis: Analysis = logic.engine.analyze(scene_bridge.volume_to_radiograph(volume))
    analysis.findings = [Finding("abnormal", FINDING_CODES["abnormal"], 0.73, 0.5, True)]
    table = scene_bridge.results_table(scene, analysis, "results")
    expected_rows = (len(analysis.findings) + len(analysis.measurements)
                     + len(analysis.quality_flags) + len(analysis.models))
    assert table.GetNumberOfRows() == expected_rows
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == list(
        scene_bridge.TABLE_COLUMNS)
    assert table.GetCellText(0, 1) == "abnormal" and table.GetCellText(0, 5) == "positive"
    assert float(table.GetCellText(0, 2)) == pytest.approx(0.73)
    for row, measurement in enumerate(analysis.measurements, start=1):
        assert table.GetCellText(row, 1) == measurement.name
        assert float(table.GetCellText(row, 2)) == pytest.approx(measurement.value)
        assert table.GetCellText(row, 3) == measurement.unit
    names = [table.GetCellText(row, 1) for row in range(table.GetNumberOfRows())]
    assert "left_lung_mask_agreement" in names  # how far to trust each mask
    assert names[-len(analysis.models):] == [model.id for model in analysis.models]


def test_volume_from_the_dicom_database_gets_its_header(scene):
    """As Slicer's DICOM module loads it: voxels plus DICOM.instanceUIDs, no file path."""
    source = read_radiograph(SIIM_DICOM)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "1: CR")
    mrml.set_volume_pixels(volume, source.pixels)
    uid = str(source.source_dataset.SOPInstanceUID)
    volume.SetAttribute(scene_bridge.DICOM_UIDS_ATTRIBUTE, uid)
    database = {uid: str(SIIM_DICOM)}  # slicer.dicomDatabase.fileForInstance in Slicer

    radiograph = scene_bridge.volume_to_radiograph(volume, dicom_file_for_uid=database.get)

    assert str(radiograph.source_dataset.SOPInstanceUID) == uid
    assert radiograph.spacing.source is SpacingSource.PIXEL_SPACING
    assert scene_bridge.volume_to_radiograph(volume).source_dataset is None  # no database
