"""``POST /api/analyze``: one DICOM, PNG or JPEG in the body, the analysis JSON out, with
links to its masks, overlay, heat maps, SEG and SR.

The same engine and writer as ``cxr analyze`` (:func:`cxr_core.write_outputs`), so the
files are the same; the same refusals, answered 422 with the reason. The upload itself is
deleted once read; results are kept under ``<storage>/api/`` for
``[web].analysis_retention_hours`` and then deleted.
"""

from __future__ import annotations

import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxr_core import RefusedInput, read_radiograph, write_outputs
from dicom_node.web.http import HttpError, Request, Response, json_response

if TYPE_CHECKING:
    from cxr_core import Engine

SUFFIXES = {"application/dicom": ".dcm", "image/png": ".png", "image/jpeg": ".jpg"}
_ANALYSIS_ID = re.compile(r"[0-9a-f]{24}")
_FILE = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}")
CONTENT_TYPES = {".png": "image/png", ".dcm": "application/dicom",
                 ".json": "application/json"}


class AnalysisService:
    """Runs uploads through one engine (built on first use, one analysis at a time).

    Parameters
    ----------
    folder:
        Where results are kept (``<storage>/api``).
    make_engine:
        Builds the engine (slow: called once, on the first request).
    retention_s:
        Results older than this are deleted (checked on every request).
    max_upload_bytes:
        Larger bodies get 413 before anything is read.
    """

    def __init__(self, *, folder: Path, make_engine: Callable[[], Engine],
                 retention_s: float, max_upload_bytes: int) -> None:
        self.folder = folder
        self.make_engine = make_engine
        self.retention_s = retention_s
        self.max_upload_bytes = max_upload_bytes
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)

    def analyze(self, request: Request, _match: re.Match[str]) -> Response:
        self.expire()
        media_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        suffix = SUFFIXES.get(media_type)
        if suffix is None:
            raise HttpError(415, "send application/dicom, image/png or image/jpeg")
        analysis_id = secrets.token_hex(12)
        folder = self.folder / analysis_id
        folder.mkdir()
        upload = folder / f"upload{suffix}"
        try:
            with upload.open("wb") as handle:
                request.copy_body(handle, max_bytes=self.max_upload_bytes)
            with self._lock:
                analysis = self._analyze(upload)
                written = write_outputs(analysis, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            upload.unlink(missing_ok=True)
        base = f"/api/analyses/{analysis_id}/"
        files = {key: base + path.relative_to(folder).as_posix()
                 for key, path in written.files.items()}
        return json_response({"id": analysis_id, "analysis": analysis.summary(),
                              "files": files})

    def _analyze(self, upload: Path) -> Any:
        try:
            radiograph = read_radiograph(upload, radiograph_id="upload")
            return self._engine_loaded().analyze(radiograph)
        except RefusedInput as error:
            raise HttpError(422, str(error)) from None

    def _engine_loaded(self) -> Engine:
        if self._engine is None:
            self._engine = self.make_engine()
        return self._engine

    def file(self, request: Request, match: re.Match[str]) -> Response:
        analysis_id, name = match.group("id"), match.group("name")
        if not _ANALYSIS_ID.fullmatch(analysis_id) or not _FILE.fullmatch(name):
            raise HttpError(404, "no such file")
        path = self.folder / analysis_id / name
        if ".." in name or not path.is_file():
            raise HttpError(404, "no such file")
        return Response(200, content_type=CONTENT_TYPES.get(path.suffix,
                                                            "application/octet-stream"),
                        file=path)

    def expire(self, now: float | None = None) -> int:
        """Delete results older than the retention; returns how many."""
        cutoff = (time.time() if now is None else now) - self.retention_s
        expired = 0
        for folder in self.folder.iterdir():
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                expired += 1
        return expired
