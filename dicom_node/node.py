"""One node process: SCP, quiet-period scheduler, workers, sender and health server."""

from __future__ import annotations

import logging
import os
import queue
import signal
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import pydicom

from dicom_node.config import NodeConfig
from dicom_node.db import STORE_ERRORS
from dicom_node.distributed import BrokerJobs, BrokerWorkers, Leases, StudyBusy, process_id
from dicom_node.health import HealthServer
from dicom_node.metrics import Metrics
from dicom_node.scp import StorageSCP
from dicom_node.sender import Sender
from dicom_node.spool import Spool, UnsafeUID, checked_instance_key, checked_uid
from dicom_node.supervise import Heartbeat, run_supervised
from dicom_node.web.app import WebApp
from dicom_node.worker import (
    WORKER_NICE,
    JobQueue,
    LocalJobQueue,
    Worker,
    lower_priority,
    storage_fault,
)

if TYPE_CHECKING:
    from cxr_core import Engine

log = logging.getLogger(__name__)
RECOVERED_AE = "(recovered)"
SCHEDULER_STALE_S = 10.0
"""The scheduler ticks every 0.25 s at most: 10 s without a tick means it is stuck."""
PROBE_EVERY_S = 2.0
SWEEP_EVERY_S = 10.0
SHARED_INCOMING_AGE_S = 3600.0
"""With a broker the spool may be shared: only files this old are surely nobody's."""
ORPHAN_AFTER_S = 30.0
"""A study queued this long without a claim may have lost its broker message (its
ingest node died between the two): it is sent again (a claim takes it once)."""


def default_engine_factory(config: NodeConfig) -> Callable[[], Engine]:
    def make() -> Engine:
        from cxr_core import Engine  # imports torch: slow, so off the main thread

        return Engine(models_dir=config.models_dir, pins=dict(config.model_pins),
                      threads=config.analysis_threads)
    return make


class Node:
    """Wires the parts together; :meth:`start` returns once the SCP listens.

    Parameters
    ----------
    config:
        Validated configuration.
    jobs:
        The job queue (default: in-process); anything with ``submit``/``take``.
    make_engine:
        Builds one engine per worker (default: ``cxr_core.Engine``).
    """

    def __init__(self, *, config: NodeConfig, jobs: JobQueue | None = None,
                 make_engine: Callable[[], Engine] | None = None) -> None:
        self.config = config
        self.spool = Spool(root=config.storage)
        self.store = config.open_store()
        self.takes_input = config.role in ("all", "ingest")
        self.runs_jobs = config.role in ("all", "worker")
        self.broker = BrokerJobs(url=config.broker_url) if config.broker_url else None
        self.jobs = jobs or self.broker or LocalJobQueue()
        self.metrics = Metrics(queue_depth=self.store.queue_depth,
                               pending_deliveries=self.store.pending_deliveries,
                               workers_alive=self.store.workers_alive_count)
        self.stop_event = threading.Event()
        self.process_id = process_id(config.role)
        self.leases = Leases(store=self.store, stop=self.stop_event)
        self.wakes = [threading.Event() for _ in config.destinations]
        self.scp = StorageSCP(config=config, spool=self.spool, store=self.store,
                              metrics=self.metrics)
        make_engine = make_engine or default_engine_factory(config)
        self.web = WebApp(config=config, store=self.store, spool=self.spool,
                          ingest=self.scp.ingest, make_engine=make_engine)
        self.workers = [
            Worker(index=i, config=config, store=self.store, spool=self.spool, jobs=self.jobs,
                   metrics=self.metrics, make_engine=make_engine, stop=self.stop_event,
                   on_study_done=self.wake_senders)
            for i in range(config.workers if self.runs_jobs else 0)]
        self.senders = [
            Sender(config=config, destination=destination, store=self.store,
                   metrics=self.metrics, stop=self.stop_event, wake=wake,
                   owner=self.process_id)
            for destination, wake in zip(config.destinations, self.wakes, strict=True)
            if self.runs_jobs]
        self.broker_workers = BrokerWorkers(
            jobs=self.broker, store=self.store, threads=len(self.workers),
            process=self._process_claimed, leases=self.leases
        ) if self.broker is not None and self.runs_jobs else None
        self._idle_workers: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        self._thread_worker = threading.local()
        self._last_sweep = 0.0
        self.scheduler_beat = Heartbeat("scheduler", stale_after_s=SCHEDULER_STALE_S)
        self.scheduler = threading.Thread(target=self._schedule, name="scheduler", daemon=True)
        self._last_probe = 0.0
        self.http: HealthServer | None = None

    def start(self) -> None:
        # the process (its senders' deliveries hang on this lease); worker threads
        # register themselves as "worker" when they take their first job
        self.leases.register(self.process_id, f"node-{self.config.role}")
        self.leases.start()
        removed = self.spool.clear_incoming(
            older_than_s=SHARED_INCOMING_AGE_S if self.broker is not None else 0.0
        ) if self.takes_input else 0
        recovered = self.reconcile() if self.takes_input else 0
        orphans = self.store.dead_letter_unconfigured(
            d.name for d in self.config.destinations) if self.runs_jobs else 0
        # one process owns everything it finds half-done; with a broker, other processes
        # may be alive: leases decide (Store.claim_job_as, Store.orphaned_jobs)
        resumed = self.store.resume() if self.broker is None else []
        for study_id in resumed:
            self.jobs.submit(study_id)
        log.info("starting", extra={"fields": {
            "role": self.config.role, "broker": self.broker is not None,
            "store": self.store.describe(),
            "resumed_jobs": len(resumed), "recovered_instances": recovered,
            "discarded_partial_files": removed, "workers": len(self.workers),
            "deliveries_to_removed_destinations": orphans,
            "destinations": [d.name for d in self.config.destinations]}})
        if self.config.http_port:
            self.http = HealthServer(address=self.config.http_address,
                                     port=self.config.http_port, metrics=self.metrics,
                                     health=self.health, app=self.web,
                                     tls=self._http_tls())
            self.http.start()
        if self.takes_input:
            self.scp.start()
            self.scheduler.start()
        if self.broker_workers is not None:
            self._start_broker_workers()
        else:
            for worker in self.workers:
                worker.start()
        for sender in self.senders:
            sender.start()

    def _start_broker_workers(self) -> None:
        """Engines first (slow), then the consumer: no message waits on a loading model."""
        assert self.broker_workers is not None
        for worker in self.workers:
            if not worker.load_engine():
                return  # /healthz says engine failed; consuming would fail every job
            self._idle_workers.put(worker)
        self.broker_workers.start()

    def _process_claimed(self, worker_id: str, study_id: int) -> None:
        """A study this process's ``worker_id`` claimed from the broker (Dramatiq thread)."""
        worker: Worker | None = getattr(self._thread_worker, "worker", None)
        if worker is None:  # this Dramatiq thread's first job: its engine, its niceness
            worker = self._thread_worker.worker = self._idle_workers.get()
            lower_priority(WORKER_NICE)
        try:
            finished = worker.process(study_id)
        except Exception as error:
            if storage_fault(error):
                self.store.requeue(study_id)
            raise  # Dramatiq retries the message later
        if not finished:  # stopping: hand the study back; the retry message keeps it
            self.store.requeue(study_id)
            raise StudyBusy(f"study {study_id} returned unfinished (stopping)")
        self.store.worker_finished_job(worker_id)

    def _http_tls(self) -> ssl.SSLContext | None:
        tls = self.config.tls
        if not self.config.web.tls or tls is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(tls.certificate, tls.private_key)
        return context

    def wake_senders(self) -> None:
        for wake in self.wakes:
            wake.set()

    def reconcile(self) -> int:
        """Register spooled files the store does not know (their commit was lost)."""
        known = self.store.known_instances()
        recovered = 0
        for path in self.spool.received.glob("*/*.dcm"):
            if path.stem in known:
                continue
            try:
                study_uid = checked_uid(path.parent.name, "spool folder")
                sop_uid = checked_instance_key(path.stem, "spool file")
                sop_class = str(pydicom.dcmread(path, stop_before_pixels=True,
                                                specific_tags=["SOPClassUID"]).SOPClassUID)
            except (UnsafeUID, Exception):  # not ours or unreadable: leave it alone
                continue
            self.store.record_instance(study_uid=study_uid, sop_uid=sop_uid,
                                       sop_class=sop_class, path=path, calling_ae=RECOVERED_AE)
            recovered += 1
        return recovered

    def heartbeats(self) -> list[Heartbeat]:
        """The loops that must keep ticking (a worker's once its engine is loaded)."""
        workers = [w.heartbeat for w in self.workers if w.state == "ready"]
        return [self.scheduler_beat, *(s.heartbeat for s in self.senders), *workers]

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``/healthz``: unhealthy when the engine failed, free space is under the
        threshold, or a loop has not ticked in time (the scheduler's tick includes a
        write to the spool and the database, so it stops ticking when they cannot be
        written)."""
        states = [w.state for w in self.workers]
        free_mb = self.spool.free_mb()
        engine = ("failed" if "engine_failed" in states else
                  "ready" if all(s == "ready" for s in states) else "loading")
        stale = [beat.name for beat in self.heartbeats() if beat.stale()]
        healthy = engine != "failed" and free_mb >= self.config.min_free_disk_mb and not stale
        # which model versions make the results (pinned ones included)
        models = sorted({model.id for worker in self.workers if worker.analyzer is not None
                         for model in worker.analyzer.engine.model_refs})
        details: dict[str, Any] = {"engine": engine, "models": models,
                                   "free_mb": round(free_mb), "stale_loops": stale}
        try:
            details.update(queue_depth=self.store.queue_depth(),
                           pending_deliveries=self.store.pending_deliveries())
        except STORE_ERRORS:
            healthy = False
            details["store"] = "unreadable"
        return healthy, details

    def _schedule(self) -> None:
        period = min(0.25, max(0.05, self.config.quiet_period_s / 4))
        run_supervised(self.scheduler_beat, self._schedule_once, stop=self.stop_event,
                       period_s=period)

    def _schedule_once(self) -> None:
        """Queue quiet studies; every few seconds also prove the storage is writable."""
        now = time.monotonic()
        if now - self._last_probe >= PROBE_EVERY_S:
            self.spool.probe_write()
            self.store.heartbeat()
            self._last_probe = now
        for study_id in self.store.queue_quiet_studies(self.config.quiet_period_s):
            self.jobs.submit(study_id)
        if self.broker is not None and now - self._last_sweep >= SWEEP_EVERY_S:
            self._last_sweep = now
            for study_id in self.store.orphaned_jobs(older_than_s=ORPHAN_AFTER_S):
                self.jobs.submit(study_id)

    def stop(self, timeout_s: float = 8.0) -> None:
        """Graceful: no new associations, finish the instance in hand, keep the rest."""
        log.info("stopping")
        self.scp.stop()
        if self.broker_workers is not None:  # drain: the job in hand finishes or goes back
            self.broker_workers.stop(timeout_s)
        self.stop_event.set()
        self.wake_senders()
        deadline = time.monotonic() + timeout_s
        # a worker still loading its models holds no job: nothing to wait for
        busy = [w for w in self.workers if w.state not in ("starting", "loading")]
        for thread in (self.scheduler, *self.senders, *busy):
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        if self.http is not None:
            self.http.stop()
        log.info("stopped")


def serve(config: NodeConfig) -> NoReturn:
    """Run until SIGTERM or SIGINT, stop gracefully, then end the process with code 0."""
    node = Node(config=config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    node.start()
    while not stop.wait(1.0):
        pass
    node.stop()
    # Daemon threads may still be inside native code (a worker loading its models with
    # torch): interpreter teardown under them aborts the process (SIGABRT, "terminate
    # called without an active exception"). Everything durable is already written.
    logging.shutdown()
    os._exit(0)
