"""STOW-RS in (PS3.18 10.5): ``POST /studies`` with ``multipart/related;
type="application/dicom"``, each part a DICOM Part 10 file.

The body is streamed to a file in the spool's ``incoming/`` folder (bounded by
``[web].max_upload_mb``), then each part is copied to its own file and handed to the same
:class:`~dicom_node.ingest.Ingest` as a C-STORE, so it is checked, fsync'ed and registered
before the response is sent. The response lists every instance: stored in
ReferencedSOPSequence, refused in FailedSOPSequence with the C-STORE status as
FailureReason and the reason in ErrorComment; 200 when all were stored, 202 when some
were, 409 when none was.
"""

from __future__ import annotations

import mmap
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydicom.filereader import read_preamble
from pynetdicom.dsutils import split_dataset

from dicom_node.ingest import CANNOT_UNDERSTAND, Ingest, Received, Verdict
from dicom_node.spool import UnsafeUID, checked_uid
from dicom_node.web.http import HttpError, Request, Response, json_response

DICOM_JSON = "application/dicom+json"
SENDER = "STOW-RS"
_BOUNDARY = re.compile(r'boundary="?([^";]{1,200})"?', re.IGNORECASE)
"""RFC 2046 allows 70 characters; Orthanc's DICOMweb plugin sends 73."""
_TYPE = re.compile(r'type="?([^";]+)"?', re.IGNORECASE)
MAX_PART_HEADER = 8192


@dataclass(frozen=True)
class Part:
    start: int
    end: int
    content_type: str


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary, after checking the request is ``multipart/related`` of
    ``application/dicom`` parts (415 otherwise)."""
    if not content_type.lower().startswith("multipart/related"):
        raise HttpError(415, "expected multipart/related; type=\"application/dicom\"")
    declared = _TYPE.search(content_type)
    if declared is not None and declared.group(1).lower() != "application/dicom":
        raise HttpError(415, "only application/dicom parts are accepted")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise HttpError(400, "multipart boundary missing")
    return found.group(1).encode("ascii", "replace")


def parts(body: mmap.mmap | bytes, boundary: bytes) -> Iterator[Part]:
    """The parts of a multipart body (RFC 2046): located, not copied."""
    delimiter = b"--" + boundary
    position = body.find(delimiter)
    if position < 0:
        raise HttpError(400, "no multipart boundary in the body")
    while True:
        position += len(delimiter)
        if body[position:position + 2] == b"--":
            return
        header_end = body.find(b"\r\n\r\n", position, position + MAX_PART_HEADER)
        if header_end < 0:
            raise HttpError(400, "malformed multipart part headers")
        headers = bytes(body[position:header_end]).decode("latin-1").lower()
        content_type = next((line.split(":", 1)[1].strip() for line in headers.split("\r\n")
                             if line.startswith("content-type:")), "")
        start = header_end + 4
        end = body.find(b"\r\n" + delimiter, start)
        if end < 0:
            raise HttpError(400, "multipart body not terminated")
        yield Part(start, end, content_type)
        position = end + 2


class StowService:
    """Handles ``POST /studies`` with ``ingest``; parts go through ``incoming``."""

    def __init__(self, *, ingest: Ingest, incoming: Path, max_upload_bytes: int) -> None:
        self.ingest = ingest
        self.incoming = incoming
        self.max_upload_bytes = max_upload_bytes

    def __call__(self, request: Request, _match: re.Match[str]) -> Response:
        boundary = boundary_of(request.headers.get("Content-Type", ""))
        body_path = self.incoming / f"stow-{secrets.token_hex(8)}.body"
        try:
            with body_path.open("w+b") as handle:
                size = request.copy_body(handle, max_bytes=self.max_upload_bytes)
                if size == 0:
                    raise HttpError(400, "empty body")
                handle.flush()  # the map reads the file, not the write buffer
                with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as body:
                    verdicts = [self._store_part(body, part)
                                for part in parts(body, boundary)]
        finally:
            body_path.unlink(missing_ok=True)
        if not verdicts:
            raise HttpError(400, "no parts in the body")
        return _response(verdicts)

    def _store_part(self, body: mmap.mmap, part: Part) -> Verdict:
        if part.content_type.split(";")[0].strip() != "application/dicom":
            return Verdict(CANNOT_UNDERSTAND, "part is not application/dicom")
        path = self.incoming / f"stow-{secrets.token_hex(8)}.dcm"
        try:
            with path.open("wb") as handle:
                for offset in range(part.start, part.end, 1 << 20):
                    handle.write(body[offset:min(offset + (1 << 20), part.end)])
            meta = _file_meta(path)
            if meta is None:
                return Verdict(CANNOT_UNDERSTAND, "not a DICOM Part 10 file")
            claimed = (meta.get("MediaStorageSOPInstanceUID"),
                       meta.get("MediaStorageSOPClassUID"))
            verdict = self.ingest.accept(Received(
                path=path, sop_uid=claimed[0], sop_class=claimed[1],
                transfer_syntax=str(meta.get("TransferSyntaxUID", "")), sender=SENDER))
            # a refused part is still named in the response, by the UIDs it claimed
            return replace(verdict, sop_uid=verdict.sop_uid or _safe_uid(claimed[0]),
                           sop_class=verdict.sop_class or _safe_uid(claimed[1]))
        finally:
            path.unlink(missing_ok=True)  # accepted files were hard-linked into the spool


def _file_meta(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            read_preamble(handle, False)
        meta, _offset = split_dataset(path)
    except Exception:  # no preamble, no DICM, unreadable meta: not Part 10
        return None
    return meta if "TransferSyntaxUID" in meta else None


def _safe_uid(value: object) -> str | None:
    try:
        return checked_uid(value, "UID")
    except UnsafeUID:
        return None


def _uid_value(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _response(verdicts: list[Verdict]) -> Response:
    stored = [v for v in verdicts if v.accepted]
    failed = [v for v in verdicts if not v.accepted]
    body: dict[str, Any] = {}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [
            {"00081150": _uid_value(v.sop_class), "00081155": _uid_value(v.sop_uid)}
            for v in stored]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [
            {"00081150": _uid_value(v.sop_class), "00081155": _uid_value(v.sop_uid),
             "00081197": {"vr": "US", "Value": [v.status]},
             "00000902": {"vr": "LO", "Value": [(v.reason or "")[:64]]}}
            for v in failed]}
    status = 200 if not failed else 202 if stored else 409
    return json_response(body, status, content_type=DICOM_JSON)
