"""Deterministic UIDs, so re-processing the same image gives the same SEG/SR UIDs and a
PACS (or the node's exactly-once logic) recognises a repeat instead of storing a copy."""

from __future__ import annotations

import copy
import hashlib
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
from pydicom import Dataset, config
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.uid import UID, generate_uid
from pydicom.valuerep import validate_value

from cxr_core.radiograph import PixelSpacing, SpacingSource

_AGE = re.compile(r"\d{3}[DWMY]")
# pydicom's registered prefix; entropy makes the rest a hash of what the object derives from
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def derived_uid(*parts: str | Sequence[str]) -> UID:
    """A UID that is a hash of ``parts`` (source UIDs, object kind, model versions...)."""
    flat = [p for part in parts for p in ([part] if isinstance(part, str) else part)]
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=flat)


def source_digest(header: Dataset, pixels: np.ndarray | None = None) -> str:
    """A sha256 (hex) of what a derived object is derived from: the source's header and,
    when given, its decoded pixels.

    Derived UIDs hash it beside the source's SOP Instance UID, so two sources that share
    that UID but differ in content or header get different results, and the same source
    read twice gets the same ones.

    Parameters
    ----------
    header:
        The source's dataset; pixel data, file meta and private elements are left out
        (they change with how the file was sent or stored, not with what it says).
    pixels:
        The source's decoded pixels (``Radiograph.pixels``).
    """
    digest = hashlib.sha256()
    for element in header.iterall():
        if element.tag.group == 0x7FE0 or element.tag.is_private or element.VR == "SQ":
            continue  # a sequence's items are visited one by one
        value = element.value
        text = value.hex() if isinstance(value, bytes) else str(value)
        digest.update(f"{int(element.tag):08X}={text}\n".encode("utf-8", "replace"))
    if pixels is not None:
        array = np.ascontiguousarray(pixels)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# Type 2 attributes (may be empty, must be present) that derived objects copy from their
# source; sources from secondary-capture converters often lack them.
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                 "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
# what else they copy: Type 2C in the SEG (empty when unknown), Type 3 (left out)
_TYPE2_OTHERS = ("PatientOrientation",)
_TYPE3_COPIED = ("BodyPartExamined",)
_ENUMERATED: dict[str, re.Pattern[str]] = {
    "PatientSex": re.compile(r"[MFO]"),
    "PatientOrientation": re.compile(r"[APRLHF]{1,3}"),  # PS3.3 C.7.6.1.1.1 directions
}


def result_digest(masks: Mapping[str, np.ndarray], findings: Sequence[tuple[str, float, bool]],
                  measurements: Sequence[tuple[str, float]]) -> str:
    """A sha256 (hex) of what an analysis says: its masks (bit-packed), findings (name,
    probability, decision) and measurements. Hashed into derived UIDs beside the source
    digest, so a different result for the same source (a corrected mask, another model
    run) never reuses an object's UID, while the same analysis gives the same UIDs."""
    digest = hashlib.sha256()
    for name in sorted(masks):
        mask = np.ascontiguousarray(masks[name], dtype=bool)
        digest.update(f"{name}{mask.shape}".encode())
        digest.update(np.packbits(mask).tobytes())
    for name, probability, positive in findings:
        digest.update(f"{name}={probability:.6f}:{positive}\n".encode())
    for name, value in measurements:
        digest.update(f"{name}={value:.6g}\n".encode())
    return digest.hexdigest()

def source_for_derivation(header: Dataset, spacing: PixelSpacing) -> Dataset:
    """A copy of the source header fit to derive from.

    Adds the Type 2 attributes derived objects copy (empty when unknown), and drops values
    that would make the derived object invalid: a PixelSpacing the reader did not take
    as such (``spacing``; e.g. ``0\\0``, meaning unknown) and a PatientAge that is not
    ``nnnD/W/M/Y``.
    """
    completed = copy.copy(header)
    # a shallow copy shares the element dict: without its own, the changes below would
    # change the caller's header (and its digest, so a second call got other UIDs)
    completed._dict = dict(header._dict)
    for keyword in _TYPE2_COPIED:
        if keyword not in completed:
            setattr(completed, keyword, None)
    if "PatientOrientation" not in completed:
        completed.PatientOrientation = None
    if "PixelSpacing" in completed and spacing.source != SpacingSource.PIXEL_SPACING:
        del completed.PixelSpacing
    if "PatientAge" in completed and not _AGE.fullmatch(str(completed.PatientAge or "")):
        del completed.PatientAge
    for keyword in (*_TYPE2_COPIED, *_TYPE2_OTHERS, *_TYPE3_COPIED):
        if keyword in completed:
            _conform(completed, keyword)
    return completed


def _conforming_values(element: DataElement, pattern: re.Pattern[str] | None
                       ) -> list[str] | None:
    """The element's values as its VR (and ``pattern``, for enumerated values) allow
    them, code strings upper-cased and stripped; None when one cannot be made to."""
    raw = element.value
    values = list(raw) if isinstance(raw, MultiValue) else [] if raw in (None, "") else [raw]
    conforming = []
    for value in values:
        text = str(value).strip()
        text = text.upper() if element.VR == "CS" else text
        try:
            validate_value(element.VR, text, config.RAISE)
        except ValueError:
            return None
        if pattern is not None and not pattern.fullmatch(text):
            return None
        conforming.append(text)
    return conforming


def _conform(completed: Dataset, keyword: str) -> None:
    """Make a copied attribute valid in the derived objects: code strings upper-cased,
    and a value its VR or enumeration does not allow (free text in a CS such as
    PatientSex, a date that is no date, an over-long SH) emptied (Type 2) or left out
    (Type 3). A value written as received would fail the writer or make the object
    invalid. The element is replaced, never changed: it is shared with the caller's
    header."""
    element = completed[keyword]
    values = _conforming_values(element, _ENUMERATED.get(keyword))
    if values is not None and element.VR != "CS":
        return  # valid as it is
    del completed[keyword]
    if values is None and keyword in _TYPE3_COPIED:
        return
    value = None if not values else values[0] if len(values) == 1 else values
    completed[keyword] = DataElement(element.tag, element.VR, value)


@contextmanager
def quiet_person_name_warnings() -> Iterator[None]:
    """highdicom warns about legacy person-name forms it copies from the source; they are
    the source's business, and the warning would print a patient name."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Pp]erson [Nn]ame.*")
        warnings.filterwarnings("ignore", module="highdicom.valuerep")
        yield
