"""Read a SlicerCXR DICOM-SEG (BINARY, projection radiograph) back into named masks.

Plain pydicom rather than ``highdicom.seg.segread`` (which wants SliceThickness in any
Pixel Measures item, as older SlicerCXR SEGs carried) or dcmqi (which cannot read a SEG
without plane orientation): the frames are mapped to segments through
``SegmentIdentificationSequence`` and segments to our names through their codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from cxr_core.io.errors import RefusedInput
from cxr_core.terminology import ANATOMICAL_STRUCTURE_ALIASES, segment_type_for_codes

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass
class SegContent:
    masks: dict[str, np.ndarray]
    """Boolean masks by our segment name (unknown segments keep their label)."""
    labels: dict[str, str]
    """Segment label as written in the SEG, by name."""
    source_sop_instance_uid: str | None
    algorithm_types: dict[str, str]
    """``AUTOMATIC``, ``SEMIAUTOMATIC`` or ``MANUAL`` by name."""
    algorithm: str | None = None
    """``name@version`` of the first segment's algorithm, when the SEG names one."""


def read_seg(path_or_dataset: Path | str | pydicom.Dataset) -> SegContent:
    """Masks by segment name from a BINARY SEG of one source frame."""
    seg = (path_or_dataset if isinstance(path_or_dataset, pydicom.Dataset)
           else pydicom.dcmread(path_or_dataset))
    if str(seg.get("SOPClassUID", "")) != SEG_SOP_CLASS:
        raise RefusedInput("not a DICOM Segmentation")
    if seg.get("SegmentationType") != "BINARY":
        raise RefusedInput(f"SegmentationType {seg.get('SegmentationType')} is not BINARY")
    frames = seg.pixel_array.astype(bool)
    if frames.ndim == 2:
        frames = frames[None]
    names = {item.SegmentNumber: _segment_name(item) for item in seg.SegmentSequence}
    masks: dict[str, np.ndarray] = {
        name: np.zeros((seg.Rows, seg.Columns), dtype=bool) for name in names.values()}
    for index, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        masks[names[number]] |= frames[index]
    return SegContent(
        masks=masks,
        labels={names[i.SegmentNumber]: str(i.SegmentLabel) for i in seg.SegmentSequence},
        source_sop_instance_uid=_source_uid(seg),
        algorithm_types={names[i.SegmentNumber]: str(i.SegmentAlgorithmType)
                         for i in seg.SegmentSequence},
        algorithm=_algorithm(seg),
    )


def _segment_name(item: pydicom.Dataset) -> str:
    type_item = item.SegmentedPropertyTypeCodeSequence[0]
    modifiers = type_item.get("SegmentedPropertyTypeModifierCodeSequence") or []
    modifier = modifiers[0].CodeValue if modifiers else None
    category = item.SegmentedPropertyCategoryCodeSequence[0].CodeValue
    segment = segment_type_for_codes(type_item.CodeValue, modifier)
    if segment is None or (segment.category.value in ANATOMICAL_STRUCTURE_ALIASES
                           and category not in ANATOMICAL_STRUCTURE_ALIASES):
        return str(item.SegmentLabel)
    return segment.name


def _algorithm(seg: pydicom.Dataset) -> str | None:
    for item in seg.get("SegmentSequence", []):
        for algorithm in item.get("SegmentationAlgorithmIdentificationSequence", []):
            name, version = algorithm.get("AlgorithmName"), algorithm.get("AlgorithmVersion")
            if name:
                return f"{name}@{version}" if version else str(name)
    return None


def _source_uid(seg: pydicom.Dataset) -> str | None:
    for series in seg.get("ReferencedSeriesSequence", []):
        for instance in series.get("ReferencedInstanceSequence", []):
            return str(instance.ReferencedSOPInstanceUID)
    return None
