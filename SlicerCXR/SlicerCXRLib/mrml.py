"""Low-level MRML helpers: radiograph geometry, pixel arrays and segment masks.

A radiograph is a single-slice volume. Its voxel array is ``(k, j, i)`` = ``(1, rows,
columns)``: IJK ``i`` runs along a row (columns), ``j`` down the image (rows). Slicer's
image readers place a 2D image in LPS with identity directions, i.e. IJK->RAS is
``diag(-column_mm, -row_mm, 1)``; volumes made here use the same convention, so a
radiograph looks the same whether Slicer or SlicerCXR loaded it.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

RADIOGRAPH_DIRECTIONS = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))


def ensure_segmentation_converters() -> None:
    """Register the segmentation converter rules if nobody has.

    The Segmentations module registers them when Slicer starts; the ``slicer-core`` wheel
    has no modules, and without the rules a segment cannot even hold a binary labelmap.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    registered = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for rule_class in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                       slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
        if rule_class.__name__ not in registered:
            factory.RegisterConverterRule(rule_class())


def radiograph_shape(volume_node: slicer.vtkMRMLVolumeNode) -> tuple[int, int]:
    """``(rows, columns)`` of a single-slice volume.

    Raises
    ------
    ValueError
        If the node has no image data or more than one slice.
    """
    image = volume_node.GetImageData() if volume_node is not None else None
    if image is None:
        raise ValueError("volume_node: no image data (is a volume selected?)")
    columns, rows, slices = image.GetDimensions()
    if slices != 1:
        raise ValueError(f"volume_node: {volume_node.GetName()!r} has {slices} slices; "
                         "a radiograph is a single 2D image")
    return rows, columns


def volume_pixels(volume_node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """A float32 copy of the radiograph's pixels, ``(rows, columns)``.

    Colour images (vector volumes, e.g. an RGB PNG) are averaged to gray.
    """
    rows, columns = radiograph_shape(volume_node)
    scalars = volume_node.GetImageData().GetPointData().GetScalars()
    array = numpy_support.vtk_to_numpy(scalars).astype(np.float32)
    components = scalars.GetNumberOfComponents()
    if components > 1:
        array = array.reshape(rows, columns, components)[..., :3].mean(axis=-1)
    return array.reshape(rows, columns).copy()


def set_volume_pixels(volume_node: slicer.vtkMRMLVolumeNode, pixels: np.ndarray) -> None:
    """Replace the volume's voxels with a 2D array (one slice, array copied)."""
    if pixels.ndim != 2:
        raise ValueError(f"pixels: expected a 2D array, got shape {pixels.shape}")
    image = vtk.vtkImageData()
    image.SetDimensions(pixels.shape[1], pixels.shape[0], 1)
    flat = np.ascontiguousarray(pixels).ravel()
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=True))
    volume_node.SetAndObserveImageData(image)


def set_radiograph_geometry(volume_node: slicer.vtkMRMLVolumeNode, row_mm: float,
                            column_mm: float) -> None:
    """Origin 0, LPS identity directions, spacing ``(column_mm, row_mm, 1)``."""
    volume_node.SetOrigin(0.0, 0.0, 0.0)
    volume_node.SetSpacing(column_mm, row_mm, 1.0)
    volume_node.SetIJKToRASDirections(*[v for row in RADIOGRAPH_DIRECTIONS for v in row])


def volume_spacing(volume_node: slicer.vtkMRMLVolumeNode) -> tuple[float, float]:
    """``(row_mm, column_mm)`` as the volume says (IJK ``j`` is rows, ``i`` columns)."""
    column_mm, row_mm, _ = volume_node.GetSpacing()
    return float(row_mm), float(column_mm)


def reference_image(volume_node: slicer.vtkMRMLVolumeNode) -> slicer.vtkOrientedImageData:
    """An empty unsigned-char image on the volume's voxel grid (geometry only)."""
    rows, columns = radiograph_shape(volume_node)
    image = slicer.vtkOrientedImageData()
    image.SetExtent(0, columns - 1, 0, rows - 1, 0, 0)
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    return image


def mask_to_oriented_image(mask: np.ndarray,
                           volume_node: slicer.vtkMRMLVolumeNode) -> slicer.vtkOrientedImageData:
    """A binary labelmap (0/1) on the volume's grid from a ``(rows, columns)`` mask."""
    image = reference_image(volume_node)
    rows, columns = radiograph_shape(volume_node)
    if mask.shape != (rows, columns):
        raise ValueError(f"mask: shape {mask.shape} differs from the volume's "
                         f"{(rows, columns)}")
    target = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    target[:] = np.ascontiguousarray(mask, dtype=np.uint8).ravel()
    image.Modified()
    return image


def segment_mask(segmentation_node: slicer.vtkMRMLSegmentationNode, segment_id: str,
                 volume_node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """A segment as a ``(rows, columns)`` bool mask on the volume's voxel grid.

    The segment's labelmap is resampled onto the volume (nearest neighbour): Segment
    Editor grows or crops a segment's extent, and a segmentation may have been made on
    another grid, yet the mask must line up with the image rows and columns.
    """
    labelmap = slicer.vtkOrientedImageData()
    if not segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap):
        raise ValueError(f"segment_id: {segment_id!r} has no binary labelmap")
    rows, columns = radiograph_shape(volume_node)
    extent = labelmap.GetExtent()
    if extent[1] < extent[0] or extent[3] < extent[2]:  # an emptied segment
        return np.zeros((rows, columns), dtype=bool)
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            labelmap, reference_image(volume_node), resampled):
        raise RuntimeError(f"segment {segment_id!r}: resampling onto the volume failed")
    values = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars())
    return values.reshape(rows, columns) > 0
