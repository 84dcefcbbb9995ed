"""Deterministic UIDs, so re-processing the same image gives the same SEG/SR UIDs and a
PACS (or the node's exactly-once logic) recognises a repeat instead of storing a copy."""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pydicom import Dataset
from pydicom.uid import UID, generate_uid

from cxr_core.radiograph import PixelSpacing, SpacingSource

_AGE = re.compile(r"\d{3}[DWMY]")
# pydicom's registered prefix; entropy makes the rest a hash of what the object derives from
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def derived_uid(*parts: str | Sequence[str]) -> UID:
    """A UID that is a hash of ``parts`` (source UIDs, object kind, model versions...)."""
    flat = [p for part in parts for p in ([part] if isinstance(part, str) else part)]
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=flat)


# Type 2 attributes (may be empty, must be present) that derived objects copy from their
# source; sources from secondary-capture converters often lack them.
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                 "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


def source_for_derivation(header: Dataset, spacing: PixelSpacing) -> Dataset:
    """A copy of the source header fit to derive from.

    Adds the Type 2 attributes derived objects copy (empty when unknown), and drops values
    that would make the derived object invalid: a PixelSpacing the reader did not take
    as such (``spacing``; e.g. ``0\\0``, meaning unknown) and a PatientAge that is not
    ``nnnD/W/M/Y``.
    """
    completed = copy.copy(header)
    for keyword in _TYPE2_COPIED:
        if keyword not in completed:
            setattr(completed, keyword, None)
    if "PatientOrientation" not in completed:
        completed.PatientOrientation = None
    if "PixelSpacing" in completed and spacing.source != SpacingSource.PIXEL_SPACING:
        del completed.PixelSpacing
    if "PatientAge" in completed and not _AGE.fullmatch(str(completed.PatientAge or "")):
        del completed.PatientAge
    return completed


@contextmanager
def quiet_person_name_warnings() -> Iterator[None]:
    """highdicom warns about legacy person-name forms it copies from the source; they are
    the source's business, and the warning would print a patient name."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Pp]erson [Nn]ame.*")
        warnings.filterwarnings("ignore", module="highdicom.valuerep")
        yield
