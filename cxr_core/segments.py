"""Segment names and their DICOM terminology: the single table every writer/reader uses.

Codes per ../shared/research/dicom-notes.md. Laterality is a modifier on "Lung"
(SCT 7771000 Left / SCT 24028007 Right), as Slicer, dcmqi and TotalSegmentator encode it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.coding import Code

ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
ANATOMICAL_STRUCTURE_ALIASES = frozenset({"91723000", "123037004"})  # both seen in the wild
MORPHOLOGICALLY_ABNORMAL = Code("49755003", "SCT", "Morphologically abnormal structure")
LUNG = Code("39607008", "SCT", "Lung")
HEART = Code("80891009", "SCT", "Heart")
PNEUMOTHORAX = Code("36118008", "SCT", "Pneumothorax")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")


@dataclass(frozen=True)
class SegmentType:
    """One structure the engine can segment."""

    name: str
    label: str
    category: Code
    property_type: Code
    modifier: Code | None
    rgb: tuple[int, int, int]


SEGMENT_TYPES: dict[str, SegmentType] = {
    s.name: s
    for s in (
        SegmentType("right_lung", "Right lung", ANATOMICAL_STRUCTURE, LUNG, RIGHT, (128, 174, 128)),
        SegmentType("left_lung", "Left lung", ANATOMICAL_STRUCTURE, LUNG, LEFT, (111, 184, 210)),
        # The training masks are the cardiomediastinal silhouette; the heart is what it
        # measures (cardiothoracic ratio), so it is coded as Heart and labelled honestly.
        SegmentType("heart", "Heart and mediastinum", ANATOMICAL_STRUCTURE, HEART, None,
                    (206, 110, 84)),
        SegmentType("pneumothorax", "Pneumothorax", MORPHOLOGICALLY_ABNORMAL, PNEUMOTHORAX,
                    None, (255, 220, 0)),
    )
}


def segment_type_for_codes(type_value: str, modifier_value: str | None) -> SegmentType | None:
    """Find our segment from a SEG's property type code and laterality modifier."""
    for segment in SEGMENT_TYPES.values():
        modifier = segment.modifier.value if segment.modifier else None
        if segment.property_type.value == type_value and modifier == modifier_value:
            return segment
    return None
