"""SR content items (PS3.3 C.17.3.2) and the small templates the TID 1500 report is made of,
written with pydicom.

Each function writes exactly the item highdicom's content classes write (``CodedConcept``,
``CodeContentItem``, ``NumContentItem``..., ``TrackingIdentifier``, ``FindingSite``,
``Measurement``...): the same elements with the same values, so a reader sees no difference
(``tests/test_sr_fast.py`` compares the two element by element). highdicom's classes
validate and convert every element on assignment and its SR constructor copies and searches
the finished tree, which cost more than a DenseNet121 forward per report; these plain
datasets cost a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom import Dataset
from pydicom.sr.coding import Code
from pydicom.valuerep import DS

CONTAINS = "CONTAINS"
HAS_OBS_CONTEXT = "HAS OBS CONTEXT"
HAS_CONCEPT_MOD = "HAS CONCEPT MOD"
HAS_ACQ_CONTEXT = "HAS ACQ CONTEXT"

# concept names of the templates below (as highdicom writes them)
TRACKING_IDENTIFIER = Code("112039", "DCM", "Tracking Identifier")
TRACKING_UID = Code("112040", "DCM", "Tracking Unique Identifier")
ALGORITHM_NAME = Code("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = Code("111003", "DCM", "Algorithm Version")
FINDING_SITE = Code("363698007", "SCT", "Finding Site")
LATERALITY = Code("272741003", "SCT", "Laterality")
MEASUREMENT_METHOD = Code("370129005", "SCT", "Measurement Method")
OBSERVER_TYPE = Code("121005", "DCM", "Observer Type")
DEVICE = Code("121007", "DCM", "Device")
DEVICE_OBSERVER = (Code("121012", "DCM", "Device Observer UID"),
                   Code("121013", "DCM", "Device Observer Name"),
                   Code("121014", "DCM", "Device Observer Manufacturer"),
                   Code("121015", "DCM", "Device Observer Model Name"))
LANGUAGE = Code("121049", "DCM", "Language of Content Item and Descendants")
ENGLISH_US = Code("en-US", "RFC5646", "English (United States)")
"""highdicom's default language of a TID 1500 report."""


def coded(code: Code) -> Dataset:
    """A Code Sequence Macro item (``highdicom.sr.CodedConcept``): a value over 16
    characters is a Long Code Value, or a URN Code Value when it is a URN or URL."""
    if len(code.meaning) > 64:
        raise ValueError(f"code {code.value}: its meaning is over 64 characters")
    item = Dataset()
    if len(code.value) <= 16:
        item.CodeValue = code.value
    elif code.value.startswith("urn") or "://" in code.value:
        item.URNCodeValue = code.value
    else:
        item.LongCodeValue = code.value
    item.CodeMeaning = code.meaning
    item.CodingSchemeDesignator = code.scheme_designator
    if code.scheme_version is not None:
        item.CodingSchemeVersion = code.scheme_version
    return item


def content_item(value_type: str, name: Code, relationship: str | None) -> Dataset:
    """A content item's Value Type, Concept Name and (except the root) Relationship Type."""
    item = Dataset()
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [coded(name)]
    if relationship is not None:
        item.RelationshipType = relationship
    return item


def with_children(item: Dataset, children: Iterable[Dataset]) -> Dataset:
    """``item`` with ``children`` as its Content Sequence (none: no Content Sequence)."""
    items = list(children)
    if items:
        item.ContentSequence = items
    return item


def code_item(name: Code, value: Code, relationship: str) -> Dataset:
    item = content_item("CODE", name, relationship)
    item.ConceptCodeSequence = [coded(value)]
    return item


def text_item(name: Code, value: str, relationship: str) -> Dataset:
    item = content_item("TEXT", name, relationship)
    item.TextValue = str(value)
    return item


def uid_item(name: Code, value: str, relationship: str) -> Dataset:
    item = content_item("UIDREF", name, relationship)
    item.UID = value
    return item


def num_item(name: Code, value: float, unit: Code, relationship: str) -> Dataset:
    """A NUM item: the value as a Decimal String and, for a float, also as a Floating
    Point Value (its exact binary value)."""
    if not isinstance(value, int | float):
        raise TypeError(f"{name.meaning}: a measured value must be an int or a float")
    measured = Dataset()
    measured.NumericValue = DS(value, auto_format=True)
    if isinstance(value, float):
        measured.FloatingPointValue = value
    measured.MeasurementUnitsCodeSequence = [coded(unit)]
    item = content_item("NUM", name, relationship)
    item.MeasuredValueSequence = [measured]
    return item


def image_item(name: Code, sop_class_uid: str, sop_instance_uid: str, *,
               frame: int | None = None, relationship: str = CONTAINS) -> Dataset:
    """An IMAGE item referencing one instance (and one of its frames)."""
    reference = Dataset()
    reference.ReferencedSOPClassUID = str(sop_class_uid)
    reference.ReferencedSOPInstanceUID = str(sop_instance_uid)
    if frame is not None:
        reference.ReferencedFrameNumber = frame
    item = content_item("IMAGE", name, relationship)
    item.ReferencedSOPSequence = [reference]
    return item


def container(name: Code, relationship: str | None, *, template: str | None = None,
              children: Iterable[Dataset] = ()) -> Dataset:
    """A CONTAINER item (continuous content), naming its DCMR template if it has one."""
    item = content_item("CONTAINER", name, relationship)
    item.ContinuityOfContent = "CONTINUOUS"
    if template is not None:
        identifier = Dataset()
        identifier.MappingResource = "DCMR"
        identifier.TemplateIdentifier = template
        item.ContentTemplateSequence = [identifier]
    return with_children(item, children)


# ------------------------------------------------------------------ small templates
def tracking_identifier(uid: str, identifier: str) -> list[Dataset]:
    """TID 4108 rows 1-2 (``highdicom.sr.TrackingIdentifier``)."""
    return [text_item(TRACKING_IDENTIFIER, identifier, HAS_OBS_CONTEXT),
            uid_item(TRACKING_UID, uid, HAS_OBS_CONTEXT)]


def algorithm_identification(name: str, version: str) -> list[Dataset]:
    """TID 4019 Algorithm Name and Version (``highdicom.sr.AlgorithmIdentification``)."""
    return [text_item(ALGORITHM_NAME, name, HAS_CONCEPT_MOD),
            text_item(ALGORITHM_VERSION, version, HAS_CONCEPT_MOD)]


def finding_site(site: Code, laterality: Code | None) -> Dataset:
    """A Finding Site with its laterality (``highdicom.sr.FindingSite``)."""
    item = code_item(FINDING_SITE, site, HAS_CONCEPT_MOD)
    sides = [] if laterality is None else [code_item(LATERALITY, laterality, HAS_CONCEPT_MOD)]
    return with_children(item, sides)


def measurement_item(name: Code, value: float, unit: Code, method: Code | None = None) -> Dataset:
    """TID 300 Measurement with its method (``highdicom.sr.Measurement``)."""
    methods = [] if method is None else [code_item(MEASUREMENT_METHOD, method, HAS_CONCEPT_MOD)]
    return with_children(num_item(name, value, unit, CONTAINS), methods)


def device_observer(uid: str, name: str, manufacturer: str, model_name: str) -> list[Dataset]:
    """TID 1002 Observer Type Device and TID 1004 Device Observer Identifying Attributes
    (``highdicom.sr.ObserverContext``)."""
    uid_name, *text_names = DEVICE_OBSERVER
    return [code_item(OBSERVER_TYPE, DEVICE, HAS_OBS_CONTEXT),
            uid_item(uid_name, uid, HAS_OBS_CONTEXT),
            *(text_item(concept, value, HAS_OBS_CONTEXT)
              for concept, value in zip(text_names, (name, manufacturer, model_name),
                                        strict=True))]


def language() -> Dataset:
    """TID 1204 Language of Content Item and Descendants, US English."""
    return code_item(LANGUAGE, ENGLISH_US, HAS_CONCEPT_MOD)
