"""One node process: SCP, quiet-period scheduler, workers, sender and health server."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import pydicom

from dicom_node.config import NodeConfig
from dicom_node.health import HealthServer
from dicom_node.metrics import Metrics
from dicom_node.scp import StorageSCP
from dicom_node.sender import Sender
from dicom_node.spool import Spool, UnsafeUID, checked_instance_key, checked_uid
from dicom_node.store import Store
from dicom_node.supervise import Heartbeat, run_supervised
from dicom_node.web.app import WebApp
from dicom_node.worker import JobQueue, LocalJobQueue, Worker

if TYPE_CHECKING:
    from cxr_core import Engine

log = logging.getLogger(__name__)
RECOVERED_AE = "(recovered)"
SCHEDULER_STALE_S = 10.0
"""The scheduler ticks every 0.25 s at most: 10 s without a tick means it is stuck."""
PROBE_EVERY_S = 2.0


def default_engine_factory(config: NodeConfig) -> Callable[[], Engine]:
    def make() -> Engine:
        from cxr_core import Engine  # imports torch: slow, so off the main thread

        return Engine(models_dir=config.models_dir, pins=dict(config.model_pins))
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
        self.store = Store(path=config.database)
        self.jobs = jobs or LocalJobQueue()
        self.metrics = Metrics(queue_depth=self.store.queue_depth,
                               pending_deliveries=self.store.pending_deliveries)
        self.stop_event = threading.Event()
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
            for i in range(config.workers)]
        self.senders = [
            Sender(config=config, destination=destination, store=self.store,
                   metrics=self.metrics, stop=self.stop_event, wake=wake)
            for destination, wake in zip(config.destinations, self.wakes, strict=True)]
        self.scheduler_beat = Heartbeat("scheduler", stale_after_s=SCHEDULER_STALE_S)
        self.scheduler = threading.Thread(target=self._schedule, name="scheduler", daemon=True)
        self._last_probe = 0.0
        self.http: HealthServer | None = None

    def start(self) -> None:
        removed = self.spool.clear_incoming()
        recovered = self.reconcile()
        orphans = self.store.dead_letter_unconfigured(d.name for d in self.config.destinations)
        resumed = self.store.resume()
        for study_id in resumed:
            self.jobs.submit(study_id)
        log.info("starting", extra={"fields": {
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
        self.scp.start()
        for thread in (*self.workers, *self.senders, self.scheduler):
            thread.start()

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
        except sqlite3.Error:
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

    def stop(self, timeout_s: float = 8.0) -> None:
        """Graceful: no new associations, finish the instance in hand, keep the rest."""
        log.info("stopping")
        self.scp.stop()
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
