"""Export a reviewed segmentation: label store entry + DICOM-SEG marked semi-automatic."""

from __future__ import annotations

import getpass
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import vtk

from cxr_core import (
    MANUFACTURER,
    SEGMENT_TYPES,
    LabelEntry,
    LabelStore,
    Radiograph,
    build_seg,
    image_key,
    segment_type_for_codes,
    utc_now,
)
from SlicerCXRLib.mrml import segment_mask
from SlicerCXRLib.scene_bridge import (
    MODEL_ATTRIBUTE,
    MODEL_OUTPUT_REFERENCE,
    MODEL_SHA_ATTRIBUTE,
    SEGMENT_NAME_TAG,
    DicomFileLookup,
    volume_to_radiograph,
)


@dataclass
class ExportResult:
    """What an export wrote and what it left out."""

    entry: LabelEntry
    store: LabelStore
    skipped_segments: list[str] = field(default_factory=list)
    """Segments that are none of ours (e.g. one the reader added), not exported."""

    @property
    def seg_path(self) -> Path | None:
        seg = self.entry.files.get("seg")
        return self.store.root / seg if seg else None


def our_segment_name(segment: slicer.vtkSegment, segment_id: str) -> str | None:
    """Which of :data:`SEGMENT_TYPES` a segment is: by our tag, its ID, or its terminology
    (a reader may rebuild a segment, but keeps choosing its terminology)."""
    tag = vtk.reference("")
    if segment.GetTag(SEGMENT_NAME_TAG, tag) and str(tag) in SEGMENT_TYPES:
        return str(tag)
    if segment_id in SEGMENT_TYPES:
        return segment_id
    return _name_from_terminology(segment.GetTerminology() or "")


def _name_from_terminology(entry: str) -> str | None:
    """Match type and type modifier codes of a serialized terminology entry."""
    parts = entry.split("~")
    if len(parts) < 4:
        return None
    type_value, modifier_value = (part.split("^")[1] if part.count("^") >= 2 else ""
                                  for part in parts[2:4])
    found = segment_type_for_codes(type_value, modifier_value or None)
    return found.name if found else None


def segmentation_masks(segmentation_node: slicer.vtkMRMLSegmentationNode,
                       volume_node: slicer.vtkMRMLVolumeNode
                       ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Our segments as ``(rows, columns)`` masks on the volume's grid, and the names of
    segments that are not ours."""
    segmentation = segmentation_node.GetSegmentation()
    masks, skipped = {}, []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        name = our_segment_name(segment, segment_id)
        if name is None or name in masks:
            skipped.append(segment.GetName())
            continue
        masks[name] = segment_mask(segmentation_node, segment_id, volume_node)
    return masks, skipped


def model_output_masks(segmentation_node: slicer.vtkMRMLSegmentationNode,
                       volume_node: slicer.vtkMRMLVolumeNode) -> dict[str, np.ndarray]:
    """The model's masks recorded beside the segmentation (empty if drawn from scratch)."""
    original = segmentation_node.GetNodeReference(MODEL_OUTPUT_REFERENCE)
    return segmentation_masks(original, volume_node)[0] if original is not None else {}


def export_segmentation(
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    store_root: Path | str,
    *,
    user: str | None = None,
    split: str = "train",
    dicom_file_for_uid: DicomFileLookup | None = None,
) -> ExportResult:
    """Write the reviewed masks as training labels (and a DICOM-SEG for DICOM images).

    Parameters
    ----------
    segmentation_node:
        The segmentation the reader corrected.
    volume_node:
        Its radiograph (the masks are resampled onto this volume's grid).
    store_root:
        The label store folder (created if needed).
    user:
        Who reviewed the masks (default: the operating-system user).
    split:
        ``train``, ``val`` or ``test``: where the entry goes in the datalist.
    dicom_file_for_uid:
        Finds the DICOM file of a volume loaded through Slicer's DICOM database.

    Raises
    ------
    ValueError
        When the segmentation holds none of our segments.
    """
    if segmentation_node is None or volume_node is None:
        raise ValueError("segmentation_node, volume_node: both are required")
    radiograph = volume_to_radiograph(volume_node, dicom_file_for_uid=dicom_file_for_uid)
    finals, skipped = segmentation_masks(segmentation_node, volume_node)
    if not finals:
        raise ValueError(f"segmentation_node: {segmentation_node.GetName()!r} has none of "
                         f"the segments {', '.join(SEGMENT_TYPES)}")
    model = segmentation_node.GetAttribute(MODEL_ATTRIBUTE)
    exported_at = utc_now()
    seg_bytes = (_corrected_seg(radiograph, finals, model, exported_at)
                 if radiograph.is_dicom else None)
    uid = str(radiograph.source_dataset.SOPInstanceUID) if radiograph.is_dicom else None
    store = LabelStore(store_root)
    entry = store.write(
        key=image_key(sop_instance_uid=uid, pixels=radiograph.pixels),
        pixels=radiograph.pixels, final_masks=finals,
        original_masks=model_output_masks(segmentation_node, volume_node),
        metadata={"source_name": volume_node.GetName(), "source_sop_instance_uid": uid,
                  "exported_by": user or getpass.getuser(), "exported_at": exported_at,
                  "model": model, "model_sha256": segmentation_node.GetAttribute(
                      MODEL_SHA_ATTRIBUTE), "split": split,
                  "pixel_spacing": radiograph.spacing.as_dict()},
        seg_bytes=seg_bytes)
    return ExportResult(entry=entry, store=store, skipped_segments=skipped)


def _corrected_seg(radiograph: Radiograph, masks: dict[str, np.ndarray], model: str | None,
                   exported_at: str) -> bytes:
    """A SEG of the corrected masks: SEMIAUTOMATIC, and new UIDs per export (the time is
    hashed in) so a PACS keeps it apart from the model's SEG of the same image."""
    assert radiograph.source_dataset is not None  # only DICOM sources get a SEG
    seg = build_seg(radiograph.source_dataset, masks, spacing=radiograph.spacing,
                    algorithm=model or MANUFACTURER, manual=True, entropy=(exported_at,))
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
