"""Jobs: a study becomes a job after its quiet period; a worker analyses its instances.

The job interface is deliberately narrow so the queue can be swapped (for a
broker-backed task engine) without touching the SCP or the engine: a job is a study id,
and everything else (instances, outcomes, results, deliveries) lives in the
:class:`~dicom_node.store.Store`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import pydicom
from pydicom.charset import python_encoding
from pydicom.filewriter import dcmwrite

from cxr_core import (
    DicomOptions,
    RefusedInput,
    build_dicom_results,
    is_own_output,
    read_radiograph,
    write_review_layers,
)
from dicom_node.config import Filters, NodeConfig
from dicom_node.db import STORE_ERRORS
from dicom_node.lookahead import Lookahead
from dicom_node.metrics import Metrics
from dicom_node.spool import Spool, checked_uid
from dicom_node.store import Instance, Result, Store
from dicom_node.supervise import Heartbeat, run_supervised

if TYPE_CHECKING:
    from cxr_core import Analysis, Engine

log = logging.getLogger(__name__)


class JobQueue(Protocol):
    """Where study ids wait for a worker. Contract: ``submit`` may be called for a study
    that is already waiting (the store's :meth:`~Store.claim_job` makes that harmless);
    ``take`` returns ``None`` when nothing arrived within ``timeout`` seconds."""

    def submit(self, study_id: int) -> None: ...

    def take(self, timeout: float) -> int | None: ...


class LocalJobQueue:
    """The embedded queue: in memory, rebuilt from the store on start (``Store.resume``)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[int] = queue.Queue()

    def submit(self, study_id: int) -> None:
        self._queue.put(study_id)

    def take(self, timeout: float) -> int | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


@dataclass
class Outcome:
    """What became of one instance: ``processed`` (with results), ``ignored``,
    ``refused`` or ``failed``, and a reason without patient data."""

    state: str
    reason: str | None = None
    results: list[Result] = field(default_factory=list)


STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})
WORKER_STALE_S = 600.0
WORKER_NICE = 10
"""Linux schedules threads one by one: the worker thread (and the torch threads it
starts) runs at this niceness, so on a busy machine receiving, which a PACS waits on,
comes before analysis, which is queued work."""
"""A worker beats after each instance; 10 minutes on one instance means it is stuck."""


def storage_fault(error: BaseException) -> bool:
    """True for errors of the node's own storage (full, read-only, failing), which pass
    when the storage recovers, as opposed to errors of the input."""
    if isinstance(error, STORE_ERRORS):  # the database (its disk full, its server gone)
        return True
    return isinstance(error, OSError) and error.errno in STORAGE_ERRNOS


def _decode_every_element(dataset: pydicom.Dataset) -> None:
    """pydicom parses values lazily; touch each one now so a broken element (unknown VR,
    impossible length) is found here, as a refusal, not deep inside the engine."""
    for element in dataset.iterall():
        _ = element.value


FILTER_REASONS = (("Modality", "modalities", "modality not processed"),
                  ("BodyPartExamined", "body_parts", "body part not chest"),
                  ("ViewPosition", "views", "view not processed"))
"""(attribute, filter, reason): reasons are fixed codes, never the header's value."""


STRICT_VRS = frozenset({"UI", "SQ"})
"""An element holding a UID or a sequence must be encoded as one: a StudyInstanceUID
encoded as PN reached the result writer and failed there (fuzz suite)."""


def vr_problem(header: pydicom.Dataset) -> str | None:
    """Why an element's VR makes the header untrustworthy, or None: a standard element
    whose dictionary VR or stored VR is UI or SQ, stored with another VR. Names the tag
    and the VRs, never the value."""
    for element in header.iterall():
        if element.tag.is_private or element.VR == "UN":
            continue
        try:
            allowed = set(pydicom.datadict.dictionary_VR(element.tag).split(" or "))
        except KeyError:
            continue
        if element.VR not in allowed and (allowed | {element.VR}) & STRICT_VRS:
            return (f"element ({element.tag.group:04X},{element.tag.element:04X}) has VR "
                    f"{element.VR}, expected {' or '.join(sorted(allowed))}")
    return None


def filter_reason(header: pydicom.Dataset, sop_class: str, filters: Filters) -> str | None:
    """Why an instance is not analysed (stored and ignored), or None to analyse it.

    ``sop_class`` is the C-STORE request's, a checked UID (digits and dots).
    """
    if is_own_output(header):
        return "made by SlicerCXR (the node's own output)"
    if sop_class not in filters.sop_classes:
        return f"SOP class {pydicom.uid.UID(sop_class).name} is not processed"
    for keyword, attribute, reason in FILTER_REASONS:
        allowed = getattr(filters, attribute)
        value = str(header.get(keyword, "") or "").strip().upper()
        if allowed and value not in allowed:
            return reason
    return None


def unknown_character_set(header: pydicom.Dataset) -> bool:
    """True when SpecificCharacterSet names a term pydicom cannot decode (text would be
    read with a guessed encoding, and results written from it)."""
    value = header.get("SpecificCharacterSet")
    terms = value if isinstance(value, pydicom.multival.MultiValue) else [value]
    return any(str(t or "").strip() not in python_encoding for t in terms if str(t or "").strip())


class Analyzer:
    """Turns one received instance into results (SEG, SR, the heat-map SEG of positive
    findings unless switched off, optional overlay SC).

    Parameters
    ----------
    engine:
        A loaded :class:`cxr_core.Engine` (one per worker thread).
    spool:
        Where results are written (durably) and refused inputs quarantined.
    filters:
        Which instances to analyse.
    overlay:
        Also make a Secondary Capture of the overlay.
    heatmap_seg:
        Make the FRACTIONAL heat-map SEG when a finding is positive.
    review_layers:
        Also keep the display layers the review page shows (:mod:`dicom_node.web`).
    """

    def __init__(self, *, engine: Engine, spool: Spool, filters: Filters, overlay: bool,
                 heatmap_seg: bool = False, review_layers: bool = False) -> None:
        self.engine = engine
        self.review_layers = review_layers
        self.spool = spool
        self.filters = filters
        self.options = DicomOptions(overlay=overlay, heatmaps=heatmap_seg)

    def run(self, instance: Instance, study_uid: str) -> Outcome:
        """Analyse one instance and write its results (:meth:`analyze`, then
        :meth:`write`)."""
        analysed = self.analyze(instance, study_uid)
        if isinstance(analysed, Outcome):
            return analysed
        return self.write(analysed, study_uid, instance.sop_uid)

    def analyze(self, instance: Instance, study_uid: str) -> Outcome | Analysis:
        """Read and analyse one instance: its analysis, or the outcome already decided
        (refused, ignored). Changes nothing but the review page's pictures, so it may run
        ahead of the store's bookkeeping (:class:`Lookahead`)."""
        try:
            header = pydicom.dcmread(instance.path, stop_before_pixels=True)
            _decode_every_element(header)
        except Exception as error:  # any parse failure means the same: unreadable input
            return Outcome("refused", f"unreadable DICOM header ({type(error).__name__})")
        if unknown_character_set(header):
            return Outcome("refused", "unknown character set")
        problem = vr_problem(header)
        if problem is not None:
            return Outcome("refused", problem)
        reason = filter_reason(header, instance.sop_class, self.filters)
        if reason is not None:
            return Outcome("ignored", reason)
        try:
            radiograph = read_radiograph(instance.path, radiograph_id=instance.sop_uid)
        except RefusedInput as error:
            return Outcome("refused", str(error))
        try:
            analysis = self.engine.analyze(radiograph)
        except RefusedInput as error:
            # a valid image that is not a frontal chest radiograph (a lateral view in a
            # chest study, a mislabelled body part): stored, not analysed, no error
            return Outcome("ignored", str(error))
        if self.review_layers:  # pictures, drawn here to balance the writing thread
            self._write_review_layers(analysis, study_uid, instance.sop_uid)
        return analysis

    def write(self, analysis: Analysis, study_uid: str, source_uid: str) -> Outcome:
        """Write an analysis' results durably: the ``processed`` outcome."""
        return Outcome("processed", results=self._write_results(analysis, study_uid,
                                                                source_uid))

    def _write_review_layers(self, analysis: Analysis, study_uid: str, key: str) -> None:
        """The review page's pictures; their loss costs a picture, never the results."""
        try:
            write_review_layers(analysis, self.spool.review_folder(study_uid, key))
        except OSError as error:
            log.warning("review layers not written", extra={"fields": {
                "error": type(error).__name__}})

    def _write_results(self, analysis: Analysis, study_uid: str, source_uid: str) -> list[Result]:
        source = analysis.radiograph.source_dataset
        assert source is not None  # the node only analyses DICOM instances
        results = []
        for kind, dataset in build_dicom_results(source, analysis, self.options).items():
            uid = checked_uid(dataset.SOPInstanceUID, f"{kind} SOPInstanceUID")
            buffer = io.BytesIO()
            dcmwrite(buffer, dataset, enforce_file_format=True)
            path = self.spool.write_durably(self.spool.result_path(study_uid, uid),
                                            [buffer.getvalue()])
            results.append(Result(uid, source_uid, kind, path))
        return results


def lower_priority(nice: int) -> None:
    """Run the calling thread at niceness ``nice`` at least (threads it starts later
    inherit it). Where threads have no niceness of their own (not Linux), nothing
    happens."""
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, max(current, nice))


class Worker(threading.Thread):
    """Takes study ids from the queue and processes each of their received instances.

    Parameters
    ----------
    make_engine:
        Builds the engine (called once, in this thread; models load slowly).
    on_study_done:
        Called after a job created deliveries (wakes the sender).
    """

    def __init__(self, *, index: int, config: NodeConfig, store: Store, spool: Spool,
                 jobs: JobQueue, metrics: Metrics, make_engine: Callable[[], Engine],
                 stop: threading.Event, on_study_done: Callable[[], None]) -> None:
        super().__init__(name=f"worker-{index}", daemon=True)
        self.config = config
        self.store = store
        self.spool = spool
        self.jobs = jobs
        self.metrics = metrics
        self.make_engine = make_engine
        self.stop_event = stop
        self.on_study_done = on_study_done
        self.state = "starting"
        self.analyzer: Analyzer | None = None
        self.heartbeat = Heartbeat(self.name, stale_after_s=WORKER_STALE_S)
        self._in_hand: int | None = None
        self._lookahead: Lookahead[Outcome | Analysis] | None = None
        self._next_study: int | None = None
        """A study taken from the queue ahead (not claimed yet): its first instance is
        analysed while the study before it is written; :meth:`_take` returns it first."""
        self._takes_ahead = False
        """Only when this thread runs its own queue loop (not under a broker, whose
        messages are acknowledged one job at a time)."""

    def load_engine(self) -> bool:
        """Build the engine and the analyzer; False (state ``engine_failed``) if it fails."""
        try:
            self.state = "loading"
            engine = self.make_engine()
        except Exception as error:
            self.state = "engine_failed"
            log.error("engine failed to load", extra={"fields": {
                "worker": self.name, "error": f"{type(error).__name__}: {error}"}})
            return False
        self.analyzer = Analyzer(engine=engine, spool=self.spool, filters=self.config.filters,
                                 overlay=self.config.overlay,
                                 heatmap_seg=self.config.heatmap_seg,
                                 review_layers=self.config.web.review_page)
        self._lookahead = Lookahead(self.analyzer.analyze, name=f"{self.name}-analysis",
                                    on_start=lambda: lower_priority(WORKER_NICE))
        self.state = "ready"
        return True

    def run(self) -> None:
        lower_priority(WORKER_NICE)
        if not self.load_engine():
            return
        self._takes_ahead = True
        run_supervised(self.heartbeat, self._tick, stop=self.stop_event, period_s=0.2,
                       wait=lambda _seconds: None)  # take() waits
        assert self._lookahead is not None
        self._lookahead.close()
        self.state = "stopped"

    def _tick(self) -> None:
        """One job. A job an error interrupted (storage full) is queued again first."""
        if self._in_hand is not None:
            self.store.requeue(self._in_hand)
            self.jobs.submit(self._in_hand)
            self._in_hand = None
        study_id = self._take()
        if study_id is not None and self.store.claim_job(study_id):
            self._in_hand = study_id
            self.process(study_id)
            if not self.stop_event.is_set():
                self._in_hand = None

    def _take(self) -> int | None:
        """The study taken ahead, else the queue's next."""
        if self._next_study is not None:
            study_id, self._next_study = self._next_study, None
            return study_id
        return self.jobs.take(timeout=0.2)

    def _take_ahead(self, current: int) -> tuple[Instance, str] | None:
        """Take the next queued study now, unclaimed, and return its first instance to
        analyse ahead. Held by this worker only, it stays ``queued`` in the store, so a
        stop loses nothing (the store's resume queues it again); it is claimed when its
        turn comes. The ``current`` study submitted twice is dropped (its claim would
        fail)."""
        if not self._takes_ahead or self._next_study is not None or self.stop_event.is_set():
            return None
        self._next_study = self.jobs.take(timeout=0.0)
        if self._next_study == current:
            self._next_study = None
        if self._next_study is None:
            return None
        pending = self.store.pending_instances(self._next_study)
        return (pending[0], self.store.study_uid(self._next_study)) if pending else None

    def process(self, study_id: int) -> bool:
        """Analyse the study's received instances and create its deliveries; False when
        a stop came first (the study is left to be resumed)."""
        started = time.monotonic()
        study_uid = self.store.study_uid(study_id)
        counts: dict[str, int] = {}
        instances = self.store.pending_instances(study_id)
        for index, instance in enumerate(instances):
            if self.stop_event.is_set():
                # graceful stop: the study stays 'processing' and is resumed on start
                return False
            following = ((instances[index + 1], study_uid) if index + 1 < len(instances)
                         else self._take_ahead(study_id))
            outcome = self._run_one(instance, study_uid, following)
            self.heartbeat.beat()
            counts[outcome.state] = counts.get(outcome.state, 0) + 1
        created = self.store.finish_job(study_id, [d.name for d in self.config.destinations])
        log.info("study processed", extra={"fields": {
            "study": study_id, **counts, "deliveries": created,
            "seconds": round(time.monotonic() - started, 3)}})
        if created:
            self.on_study_done()
        return True

    def _run_one(self, instance: Instance, study_uid: str,
                 following: tuple[Instance, str] | None) -> Outcome:
        """Process one instance; ``following`` (the next to process) is analysed
        meanwhile."""
        assert self.analyzer is not None and self._lookahead is not None
        try:
            analysed = self._lookahead.result(instance, study_uid)
            if following is not None:
                self._lookahead.ahead(*following)
            outcome = (analysed if isinstance(analysed, Outcome) else
                       self.analyzer.write(analysed, study_uid, instance.sop_uid))
        except Exception as error:  # one bad instance must not stop the study
            if storage_fault(error):
                raise  # transient: the job is queued again, the instance stays received
            log.exception("instance failed", extra={"fields": {"study": instance.study_id}})
            outcome = Outcome("failed", f"internal error ({type(error).__name__})")
        path = None
        if outcome.state == "refused":
            path = self.spool.move_to_quarantine(instance.path, study_uid, instance.sop_uid)
        self.store.record_outcome(sop_uid=instance.sop_uid, state=outcome.state,
                                  reason=outcome.reason, path=path, results=outcome.results)
        self._count(outcome)
        log.info("instance " + outcome.state, extra={"fields": {
            "study": instance.study_id, "reason": outcome.reason,
            "results": len(outcome.results)}})
        return outcome

    def _count(self, outcome: Outcome) -> None:
        if outcome.state == "processed":
            self.metrics.instances_processed.inc()
        elif outcome.state == "ignored":
            self.metrics.instances_ignored.inc()
        else:
            self.metrics.instances_failed.labels(state=outcome.state).inc()

