"""STOW-RS out (PS3.18 10.5): a study's results to a DICOMweb destination in one request.

The destination answers per instance; an instance counts as delivered only when it is
listed in ReferencedSOPSequence (and not in FailedSOPSequence), so the exactly-once and
dead-letter rules are those of C-STORE: a delivery is marked sent right after the
destination's answer, and anything else is a failed attempt under the retry policy.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

ACCEPT = "application/dicom+json"


@dataclass(frozen=True)
class StowOutcome:
    """Per SOP Instance UID: None when stored, else why not."""

    errors: dict[str, str | None]


def _body(files: list[Path], boundary: str) -> bytes:
    chunks: list[bytes] = []
    for path in files:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                   path.read_bytes(), b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def stow(url: str, files: dict[str, Path], *, authorization: str | None,
         timeout_s: float) -> StowOutcome:
    """POST ``files`` (SOP Instance UID -> Part 10 file) to ``<url>/studies``."""
    boundary = secrets.token_hex(16)
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; '
                               f"boundary={boundary}", "Accept": ACCEPT}
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(url.rstrip("/") + "/studies", method="POST",
                                     data=_body(list(files.values()), boundary),
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return _outcome(files, reply.status, reply.read())
    except urllib.error.HTTPError as error:
        return _outcome(files, error.code, error.read())
    except (OSError, ValueError) as error:  # refused, timed out, reset, bad URL
        why = f"no connection ({type(error).__name__})"
        return StowOutcome(dict.fromkeys(files, why))


def _outcome(files: dict[str, Path], status: int, body: bytes) -> StowOutcome:
    try:
        answer: Any = pydicom.Dataset.from_json(json.loads(body)) if body.strip() else None
    except (ValueError, TypeError, KeyError):
        answer = None
    if answer is None:
        return StowOutcome(dict.fromkeys(files, f"HTTP {status}, no STOW-RS response"))
    stored = {str(item.ReferencedSOPInstanceUID)
              for item in answer.get("ReferencedSOPSequence", [])}
    failed = {str(item.get("ReferencedSOPInstanceUID", "")):
              f"failure 0x{int(item.get('FailureReason', 0)):04X}"
              for item in answer.get("FailedSOPSequence", [])}
    return StowOutcome({uid: failed.get(uid) if uid in failed else
                        None if uid in stored else f"HTTP {status}, instance not listed"
                        for uid in files})
