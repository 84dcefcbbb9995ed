"""Accepting one received instance: the checks, the spool and the store, for every way in.

C-STORE (:mod:`dicom_node.scp`) and STOW-RS (:mod:`dicom_node.web.stow`) both hand a
received file here, so an instance gets the same limits, the same identity rules and the
same durability whichever protocol brought it.

Contract of :meth:`Ingest.accept`: it returns :data:`SUCCESS` only after the instance is
fsync'ed into the spool and registered in the store (or is a byte-identical resend of an
instance already accepted); otherwise a failure status with a reason that names the
problem, never patient data. Nothing is decoded before the declared sizes are checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom.dsutils import split_dataset

from cxr_core import RefusedInput, check_dicom_decode_limits, check_inflated_size
from dicom_node.config import NodeConfig
from dicom_node.db import STORE_OR_DISK_ERRORS
from dicom_node.metrics import Metrics
from dicom_node.spool import Spool, UnsafeUID, checked_uid, instance_key
from dicom_node.store import Store

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
DUPLICATE_UID = 0xC0D1
"""Failure (the C-STORE "cannot understand" range): this SOP Instance UID was already
accepted with other content, or in another study; the accepted instance is kept."""
DEFER_BYTES = 64 * 1024
"""Values larger than this stay in the received file until read (pixel data)."""


@dataclass(frozen=True)
class Received:
    """A file in the spool's ``incoming/`` folder: preamble, File Meta, then the dataset
    bytes exactly as they arrived.

    ``sop_uid``/``sop_class`` are what the transfer claimed (the C-STORE request, or the
    File Meta of a STOW-RS part); the dataset must agree with them.
    """

    path: Path
    sop_uid: object
    sop_class: object
    transfer_syntax: str
    sender: str
    """Who sent it: the calling AE title, or ``STOW-RS``."""


@dataclass(frozen=True)
class Verdict:
    """What became of a received instance."""

    status: int
    reason: str | None = None
    sop_uid: str | None = None
    sop_class: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == SUCCESS


def _file_ends_with(path: Path, data: bytes) -> bool:
    """True when the file at ``path`` ends with ``data`` (a spooled file is preamble,
    File Meta, then the dataset bytes exactly as received)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            if size < len(data):
                return False
            handle.seek(size - len(data))
            return handle.read() == data
    except OSError:
        return False


class Ingest:
    """Checks a received file and, when it passes, keeps it durably.

    Parameters
    ----------
    config:
        Limits, identity rules (``reused_uids``) and the disk threshold.
    spool, store:
        Where accepted instances are written and registered.
    metrics:
        Counters to update.
    on_received:
        Called after each newly registered instance (e.g. to wake the scheduler).
    """

    def __init__(self, *, config: NodeConfig, spool: Spool, store: Store, metrics: Metrics,
                 on_received: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.spool = spool
        self.store = store
        self.metrics = metrics
        self.on_received = on_received

    def accept(self, received: Received) -> Verdict:
        if self.spool.free_mb() < self.config.min_free_disk_mb:
            self.metrics.instances_rejected.labels(reason="disk_full").inc()
            return Verdict(OUT_OF_RESOURCES, "storage nearly full")
        try:
            if received.path.stat().st_size > self.config.limits.max_dataset_mb * 2**20:
                raise RefusedInput(f"dataset larger than "
                                   f"{self.config.limits.max_dataset_mb:.0f} MiB")
            offset = split_dataset(received.path)[1]
            self._check_inflated_size(received, offset)
            dataset = pydicom.dcmread(received.path, defer_size=DEFER_BYTES)
            study_uid, sop_uid, sop_class = _identify(received, dataset)
            check_dicom_decode_limits(
                dataset, max_bytes=int(self.config.limits.max_decoded_mb * 2**20))
        except (UnsafeUID, RefusedInput) as error:
            return self._refuse(str(error))
        except Exception as error:  # a dataset that cannot be decoded at all
            return self._refuse(f"undecodable dataset ({type(error).__name__})")
        return self._keep(received, offset, study_uid, sop_uid, sop_class)

    def _keep(self, received: Received, offset: int, study_uid: str, sop_uid: str,
              sop_class: str) -> Verdict:
        try:
            key = self._instance_key(received.path, offset, study_uid, sop_uid)
        except STORE_OR_DISK_ERRORS:
            return Verdict(OUT_OF_RESOURCES, "could not read the store")
        if isinstance(key, Verdict):
            return key
        path = self.spool.instance_path(study_uid, key)
        try:
            self.spool.adopt_durably(received.path, path)
            new = self.store.record_instance(study_uid=study_uid, sop_uid=key,
                                             sop_class=sop_class, path=path,
                                             calling_ae=received.sender)
        except STORE_OR_DISK_ERRORS as error:  # disk full, I/O error, database locked
            self.metrics.instances_rejected.labels(reason="storage_error").inc()
            log.error("instance not stored", extra={"fields": {
                "error": type(error).__name__}})
            return Verdict(OUT_OF_RESOURCES, f"could not store ({type(error).__name__})")
        self.metrics.instances_received.inc()
        if new:
            self.on_received()
        return Verdict(SUCCESS, sop_uid=sop_uid, sop_class=sop_class)

    def _instance_key(self, received: Path, offset: int, study_uid: str, sop_uid: str
                      ) -> str | Verdict:
        """The key to store a received instance under, or the verdict when not stored.

        A new UID is its own key. The same bytes in the same study as an accepted version
        are a resend (a lost response, a PACS retry): Success, nothing written. Other
        content or another study is never written over the accepted instance: with
        ``reused_uids = "refuse"`` it is refused with :data:`DUPLICATE_UID`, with
        ``"version"`` it is stored as the next version (``<UID>~<n>``) and analysed.
        """
        versions = self.store.instance_versions(sop_uid)
        if not versions:
            return sop_uid
        with received.open("rb") as handle:
            handle.seek(offset)
            content = handle.read()
        if any(study == study_uid and _file_ends_with(path, content)
               for study, path in versions):
            return Verdict(SUCCESS, sop_uid=sop_uid)
        if self.config.reused_uids == "version":
            return instance_key(sop_uid, len(versions) + 1)
        why = ("SOP Instance UID already accepted in another study"
               if all(study != study_uid for study, _ in versions)
               else "SOP Instance UID already accepted with other content")
        self.metrics.instances_rejected.labels(reason="reused_uid").inc()
        log.warning("instance refused", extra={"fields": {"reason": why}})
        return Verdict(DUPLICATE_UID, why, sop_uid=sop_uid)

    def _check_inflated_size(self, received: Received, offset: int) -> None:
        """Before pydicom inflates a deflated dataset (whole, in memory): its size."""
        if received.transfer_syntax != DeflatedExplicitVRLittleEndian:
            return
        with received.path.open("rb") as handle:
            handle.seek(offset)
            deflated = handle.read()
        check_inflated_size(deflated, max_bytes=int(self.config.limits.max_inflated_mb * 2**20))

    def _refuse(self, reason: str) -> Verdict:
        self.metrics.instances_rejected.labels(reason="invalid").inc()
        log.warning("instance refused", extra={"fields": {"reason": reason}})
        return Verdict(CANNOT_UNDERSTAND, reason)


def _identify(received: Received, dataset: Dataset) -> tuple[str, str, str]:
    sop_uid = checked_uid(received.sop_uid, "AffectedSOPInstanceUID")
    sop_class = checked_uid(received.sop_class, "AffectedSOPClassUID")
    study_uid = checked_uid(dataset.get("StudyInstanceUID"), "StudyInstanceUID")
    if checked_uid(dataset.get("SOPInstanceUID"), "SOPInstanceUID") != sop_uid:
        raise UnsafeUID("SOPInstanceUID differs from the transfer's")
    return study_uid, sop_uid, sop_class
