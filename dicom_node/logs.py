"""Structured (JSON lines) logs that carry no patient data.

Rules: messages are fixed strings; variable facts go in ``extra={"fields": {...}}`` and
are study ids (the store's integers), states, counts and reasons from
:class:`cxr_core.RefusedInput` (which never quote patient data). Python warnings are
reduced to their category, because library warnings may quote attribute values (a
person name with an odd format, for example).
"""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info and record.exc_info[0] is not None:
            # the exception type and where it happened; its message may quote data
            entry["exception"] = record.exc_info[0].__name__
            entry["where"] = _last_frame(record.exc_info[2])
        return json.dumps(entry, default=str)


def _last_frame(traceback: object) -> str:
    frame = traceback
    while frame is not None and frame.tb_next is not None:  # type: ignore[attr-defined]
        frame = frame.tb_next  # type: ignore[attr-defined]
    if frame is None:
        return ""
    code = frame.tb_frame.f_code  # type: ignore[attr-defined]
    return f"{code.co_filename.rsplit('/', 1)[-1]}:{frame.tb_lineno} {code.co_name}"  # type: ignore[attr-defined]


class _LibraryTextRedacted(logging.Filter):
    """Other libraries' messages quote values ("Invalid value for VR PN: 'DOE^JOHN'"): keep
    the text before the first quote or colon, drop the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("dicom_node") or record.name == "py.warnings":
            return True
        text = record.getMessage()
        cut = min((i for i in (text.find("'"), text.find('"'), text.find(": ")) if i >= 0),
                  default=len(text))
        record.msg, record.args = text[:cut].strip() or "library message", ()
        return True


class _WarningCategoryOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # 'py.warnings' records hold the formatted warning text; keep the category only
        text = record.getMessage()
        category = text.split(": ", 2)[1].split(":")[-1] if ": " in text else "Warning"
        record.msg, record.args = "library warning", ()
        record.fields = {"category": category.strip()[:60]}
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_LibraryTextRedacted())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom's INFO/DEBUG output dumps PDUs and DIMSE messages; keep its warnings only
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # highdicom's INFO lines name the source instances it copies attributes from
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addFilter(_WarningCategoryOnly())
