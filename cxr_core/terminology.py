"""Every code the engine writes: segments, findings, measurement concepts and units.

The one table read by the SEG writer and reader, the SR writer, the findings stages and
the Slicer terminology. Codes per ../shared/research/dicom-notes.md. Laterality is a
modifier on "Lung" (SCT 7771000 Left / SCT 24028007 Right), as Slicer, dcmqi and
TotalSegmentator encode it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.coding import Code

# -------------------------------------------------------------------------- anatomy
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
ANATOMICAL_STRUCTURE_ALIASES = frozenset({"91723000", "123037004"})  # both seen in the wild
MORPHOLOGICALLY_ABNORMAL = Code("49755003", "SCT", "Morphologically abnormal structure")
LUNG = Code("39607008", "SCT", "Lung")
HEART = Code("80891009", "SCT", "Heart")
PNEUMOTHORAX = Code("36118008", "SCT", "Pneumothorax")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")
SIDES: dict[str, Code] = {"right": RIGHT, "left": LEFT}
"""Patient sides by the name the engine uses in segment and measurement names."""
LUNG_ZONES: dict[str, Code] = {
    "upper": Code("281392002", "SCT", "Upper zone of lung"),
    "middle": Code("281393007", "SCT", "Middle zone of lung"),
    "lower": Code("281394001", "SCT", "Lower zone of lung"),
}
"""The SR finding site of a finding in a lung zone (:mod:`cxr_core.zones`), by level; the
side is a laterality modifier from :data:`SIDES`."""

# ------------------------------------------------------------------------- findings
FINDING_CODES: dict[str, Code] = {
    "abnormal": Code("263654008", "SCT", "Abnormal"),
    "pneumonia": Code("233604007", "SCT", "Pneumonia"),
    "pneumothorax": PNEUMOTHORAX,
    # The NIH ChestX-ray14 labels. Where DICOM's own code tables (pydicom's codedict)
    # have the concept, their code is used (cardiomegaly, edema, effusion, mass, nodule).
    "atelectasis": Code("46621007", "SCT", "Atelectasis"),
    "cardiomegaly": Code("287272002", "SCT", "Cardiomegaly"),
    "consolidation": Code("95436008", "SCT", "Lung consolidation"),
    "edema": Code("19242006", "SCT", "Pulmonary edema"),
    "effusion": Code("60046008", "SCT", "Pleural effusion"),
    "emphysema": Code("87433001", "SCT", "Pulmonary emphysema"),
    "fibrosis": Code("51615001", "SCT", "Fibrosis of lung"),
    "hernia": Code("84089009", "SCT", "Hiatal hernia"),
    "infiltration": Code("409609008", "SCT", "Radiologic infiltrate of lung"),
    "mass": Code("4147007", "SCT", "Mass"),
    "nodule": Code("27925004", "SCT", "Nodule"),
    # No SNOMED code for pleural thickening could be verified here; a private code says so.
    "pleural_thickening": Code("PLTHICK", "99SLCXR", "Pleural thickening"),
}
"""Image-level findings by label name (a classifier's card labels must be listed here)."""

# ------------------------------------------------------------- measurement concepts
AREA = Code("42798000", "SCT", "Area")
PROBABILITY = Code("122157", "DCM", "Probability")
# No standard code was found for these; a private scheme says so honestly.
PRIVATE_SCHEME = "99SLCXR"
CARDIOTHORACIC_RATIO = Code("CTR", PRIVATE_SCHEME, "Cardiothoracic ratio")
LUNG_AREA_RATIO = Code("RLAR", PRIVATE_SCHEME, "Right to left lung area ratio")
PNEUMOTHORAX_HEMITHORAX_PERCENT = Code("PTXHEMI", PRIVATE_SCHEME,
                                       "Pneumothorax percentage of hemithorax")
# Collins' formula (AJR 1995) has no SNOMED, LOINC or DCM code either.
PNEUMOTHORAX_COLLINS_PERCENT = Code("PTXCOLL", PRIVATE_SCHEME,
                                    "Pneumothorax size by Collins formula")
# Nor the BTS rim (interpleural distance at the hilum).
PNEUMOTHORAX_HILUM_RIM = Code("PTXRIM", PRIVATE_SCHEME,
                              "Pneumothorax interpleural distance at the hilum")

MASK_AGREEMENT = Code("MASKAGREE", PRIVATE_SCHEME, "Segmentation mask agreement estimate")
"""How far to trust a mask (:mod:`cxr_core.mask_quality`): no standard code either."""
MASK_AGREEMENT_METHOD = Code("COREXTDICE", PRIVATE_SCHEME,
                             "Dice of confident core and widest extent of model output")
"""The method of :data:`MASK_AGREEMENT` (the SR's Measurement Method)."""

# ------------------------------------------------------------------------- units
UNITS: dict[str, Code] = {
    "mm2": Code("mm2", "UCUM", "square millimeter"),
    "{pixels}": Code("{pixels}", "UCUM", "pixels"),
    "1": Code("1", "UCUM", "no units"),
    "%": Code("%", "UCUM", "Percent"),
    "mm": Code("mm", "UCUM", "millimeter"),
}
"""UCUM units by the unit string a :class:`~cxr_core.analysis.Measurement` carries."""


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
"""Segments in the order SEGs list them."""


def segment_type_for_codes(type_value: str, modifier_value: str | None) -> SegmentType | None:
    """Find our segment from a property type code value and laterality modifier value."""
    for segment in SEGMENT_TYPES.values():
        modifier = segment.modifier.value if segment.modifier else None
        if segment.property_type.value == type_value and modifier == modifier_value:
            return segment
    return None


def finding_code(label: str) -> Code:
    """The code of an image-level finding.

    Raises
    ------
    ValueError
        If the label is not in :data:`FINDING_CODES`.
    """
    try:
        return FINDING_CODES[label]
    except KeyError:
        raise ValueError(f"label: no code for finding {label!r}; known: "
                         f"{', '.join(FINDING_CODES)}") from None

# ----------------------------------------------------------------- SR vocabulary
PLAIN_CHEST_XRAY = Code("399208008", "SCT", "Plain chest X-ray")
"""The procedure performed (the SR's Performed Procedure Code Sequence)."""
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
"""The procedure reported (TID 1500 row 4, whose values come from CID 100 "Quantitative
Diagnostic Imaging Procedures"; Plain chest X-ray is not in it, Imaging procedure is)."""
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")
COMMENT = Code("121106", "DCM", "Comment")
ARTIFICIAL_INTELLIGENCE = Code("123109", "DCM", "Artificial Intelligence")
"""The algorithm family written into SEG algorithm identification."""
