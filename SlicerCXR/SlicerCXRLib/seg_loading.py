"""Load a SlicerCXR DICOM-SEG into a segmentation node aligned with its radiograph.

Slicer's DICOM-SEG plugin (dcmqi) needs plane positions, which a SEG of a projection
radiograph does not have (no Frame of Reference); the engine's reader maps frames to
segments by code instead, and the masks go onto the source volume's voxel grid.
"""

from __future__ import annotations

from pathlib import Path

import slicer

from cxr_core import SEGMENT_TYPES, read_seg
from SlicerCXRLib.mrml import radiograph_shape
from SlicerCXRLib.scene_bridge import (
    DICOM_UIDS_ATTRIBUTE,
    masks_to_segmentation,
    record_model_output,
)

AUTOMATIC = "AUTOMATIC"


def find_source_volume(scene: slicer.vtkMRMLScene,
                       sop_instance_uid: str) -> slicer.vtkMRMLScalarVolumeNode | None:
    """The volume showing the DICOM instance ``sop_instance_uid``, if one is loaded."""
    volumes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    for index in range(volumes.GetNumberOfItems()):
        volume = volumes.GetItemAsObject(index)
        if sop_instance_uid in (volume.GetAttribute(DICOM_UIDS_ATTRIBUTE) or "").split():
            return volume
    return None


def load_seg(scene: slicer.vtkMRMLScene, path: Path | str,
             volume_node: slicer.vtkMRMLScalarVolumeNode | None = None
             ) -> slicer.vtkMRMLSegmentationNode:
    """Read our SEG and add its segments on the source radiograph's geometry.

    Parameters
    ----------
    scene:
        Where the segmentation goes.
    path:
        A BINARY SEG of one radiograph (as ``cxr analyze`` or an export writes).
    volume_node:
        The source radiograph; found by the SEG's referenced SOP Instance UID if omitted.

    Raises
    ------
    ValueError
        When no volume is given or found, when the SEG references another image, or when
        its size differs from the volume's.
    """
    content = read_seg(Path(path))
    source_uid = content.source_sop_instance_uid
    if volume_node is None:
        volume_node = find_source_volume(scene, source_uid) if source_uid else None
        if volume_node is None:
            raise ValueError(f"volume_node: load the SEG's source image (SOP Instance UID "
                             f"{source_uid}) first, or pass its volume")
    loaded_uids = (volume_node.GetAttribute(DICOM_UIDS_ATTRIBUTE) or "").split()
    if source_uid and loaded_uids and source_uid not in loaded_uids:
        raise ValueError(f"volume_node: {volume_node.GetName()!r} is not the SEG's source "
                         f"image ({source_uid})")
    rows, columns = radiograph_shape(volume_node)
    unknown = sorted(n for n in content.masks if n not in SEGMENT_TYPES)
    shapes = {mask.shape for mask in content.masks.values()}
    if shapes != {(rows, columns)}:
        raise ValueError(f"path: SEG masks are {sorted(shapes)}, the volume is {rows}x{columns}")
    masks = {n: m for n, m in content.masks.items() if n not in unknown}
    node = masks_to_segmentation(scene, volume_node, masks, name=Path(path).stem)
    if masks and all(content.algorithm_types[n] == AUTOMATIC for n in masks):
        # untouched model output: what the reader changes from here on is an edit
        record_model_output(scene, node, volume_node, masks, model=content.algorithm,
                            model_sha256=None)
    if unknown:
        node.SetAttribute("SlicerCXR.unknownSegments", ", ".join(unknown))
    return node

