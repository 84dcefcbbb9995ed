"""What the review page reads: the studies with their state, and one study's instances
(analysis summary, display layers) and deliveries. URLs carry the store's study number
and the instance's position in its study, never a UID."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from dicom_node.db import Row
from dicom_node.spool import Spool
from dicom_node.store import Store
from dicom_node.web.http import HttpError

LAYER_FILE = re.compile(r"(radiograph|heat|segment-[a-z_]+)\.png")
SUMMARY_FILE = "analysis.json"


def display_state(row: Row) -> str:
    """One word for a study's state: what an operator needs to act on comes first."""
    if row["dead"]:
        return "dead-lettered"
    if row["state"] == "receiving":
        return "received"
    if row["state"] in ("queued", "processing"):
        return "processing"
    if row["failed"]:
        return "failed"
    if row["instances"] and row["ignored"] == row["instances"]:
        return "ignored"
    if row["deliveries"] and row["sent"] < row["deliveries"]:
        return "delivering"
    return "delivered" if row["deliveries"] else "analysed"


def study_list(store: Store, *, limit: int = 200) -> list[dict[str, Any]]:
    return [{
        "id": row["id"],
        "state": display_state(row),
        "received": row["last_received"],
        "instances": row["instances"],
        "processed": row["processed"],
        "ignored": row["ignored"],
        "failed": row["failed"],
        "deliveries": row["deliveries"],
        "sent": row["sent"],
        "dead": row["dead"],
    } for row in store.study_summaries(limit)]


def study_detail(store: Store, spool: Spool, study_id: int) -> dict[str, Any]:
    study = store.study(study_id)
    if study is None:
        raise HttpError(404, "no such study")
    summary = next(iter(store.study_summaries(1, study_id=study_id)), None)
    instances = store.study_instances(study_id)
    position = {row["sop_uid"]: n for n, row in enumerate(instances, start=1)}
    return {
        "id": study_id,
        "state": display_state(summary) if summary is not None else study["state"],
        "received": study["last_received"],
        "instances": [_instance(spool, study["study_uid"], study_id, n, row)
                      for n, row in enumerate(instances, start=1)],
        "deliveries": [{
            "destination": row["destination"], "kind": row["kind"],
            "instance": position.get(row["source_sop_uid"]), "state": row["state"],
            "attempts": row["attempts"], "last_error": row["last_error"],
            "sent_at": row["sent_at"],
        } for row in store.study_deliveries(study_id)],
    }


def _instance(spool: Spool, study_uid: str, study_id: int, n: int, row: Row
              ) -> dict[str, Any]:
    folder = spool.review_folder(study_uid, row["sop_uid"])
    entry: dict[str, Any] = {"n": n, "state": row["state"], "reason": row["reason"],
                             "analysis": None, "layers": {}}
    summary = folder / SUMMARY_FILE
    if summary.is_file():
        entry["analysis"] = json.loads(summary.read_text())
        base = f"/api/studies/{study_id}/instances/{n}/"
        entry["layers"] = {p.stem: base + p.name for p in sorted(folder.glob("*.png"))
                           if LAYER_FILE.fullmatch(p.name)}
    return entry


def layer_file(store: Store, spool: Spool, study_id: int, n: int, name: str) -> Path:
    """The PNG of one layer, checked: a known study, instance and layer name only."""
    if not LAYER_FILE.fullmatch(name):
        raise HttpError(404, "no such layer")
    study = store.study(study_id)
    instances = store.study_instances(study_id) if study is not None else []
    if study is None or not 1 <= n <= len(instances):
        raise HttpError(404, "no such instance")
    path = spool.review_folder(study["study_uid"], instances[n - 1]["sop_uid"]) / name
    if not path.is_file():
        raise HttpError(404, "no such layer")
    return path


def retry_study(store: Store, study_id: int) -> dict[str, int]:
    study = store.study(study_id)
    if study is None:
        raise HttpError(404, "no such study")
    return store.retry(study_uid=study["study_uid"])
