"""A pynetdicom destination for the delivery tests: a real Storage and Query (C-FIND,
Study Root, IMAGE level) SCP on a free loopback port that keeps every copy it receives
and can hold its first C-STORE response, so a test can kill the node while a C-STORE is
unanswered (the moment DIMSE cannot settle)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComprehensiveSRStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.node.node_helpers import DEST_AE, free_port


class HoldingDestination:
    """Stores each received instance as ``<SOP UID>.<n>.dcm`` (a repeat is a second
    file) and answers C-FIND for what it stored.

    Parameters
    ----------
    folder:
        Where received copies are written.
    hold_first:
        ``"stored"``: write the first C-STORE's instance, then hold its response until
        :meth:`release`; ``"dropped"``: hold it without writing it (a destination that
        failed before storing); ``None``: answer at once.
    """

    def __init__(self, folder: Path, *, hold_first: str | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.hold_first = hold_first
        self.holding = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._stores = 0
        self.server: object | None = None

    def start(self) -> HoldingDestination:
        self.folder.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=DEST_AE)
        for sop_class in (SegmentationStorage, ComprehensiveSRStorage,
                          SecondaryCaptureImageStorage):
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_STORE, self._on_store), (evt.EVT_C_FIND, self._on_find)])
        return self

    def release(self) -> None:
        self._release.set()

    def stop(self) -> None:
        self._release.set()
        if self.server is not None:
            self.server.shutdown()  # type: ignore[attr-defined]
            self.server = None

    def received(self) -> collections.Counter:
        """SOP Instance UID -> copies received."""
        return collections.Counter(p.name.rsplit(".", 2)[0] for p in self.folder.glob("*.dcm"))

    def _on_store(self, event: evt.Event) -> int:
        with self._lock:
            self._stores += 1
            first = self._stores == 1
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        if not (first and self.hold_first == "dropped"):
            uid = str(dataset.SOPInstanceUID)
            copy = sum(1 for _ in self.folder.glob(f"{uid}.*.dcm")) + 1
            dataset.save_as(self.folder / f"{uid}.{copy}.dcm", enforce_file_format=True)
        if first and self.hold_first:
            self.holding.set()
            self._release.wait(120)
        return 0x0000

    def _on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        wanted = str(event.identifier.get("SOPInstanceUID", ""))
        for path in sorted(self.folder.glob(f"{wanted}.*.dcm"))[:1]:
            stored = pydicom.dcmread(path, stop_before_pixels=True)
            match = Dataset()
            match.QueryRetrieveLevel = "IMAGE"
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                setattr(match, keyword, stored.get(keyword))
            yield 0xFF00, match
        yield 0x0000, None
