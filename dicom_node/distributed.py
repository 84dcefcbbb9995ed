"""The node's jobs on RabbitMQ through Dramatiq, for ingest and worker roles on many
machines.

Why Dramatiq on RabbitMQ: a message is acknowledged only after its actor returned, and
the broker hands every unacknowledged message of a closed connection (a worker killed
with SIGKILL) to another consumer at once; queues are durable and messages persistent,
so a broker restart keeps the queued jobs; publisher confirms make :meth:`BrokerJobs.submit`
return only once the broker holds the message. (huey acknowledges at pickup: a killed
worker would lose its job.)

The broker carries only study ids; the state stays in the job store, where a claim with
a lease (:meth:`dicom_node.store.Store.claim_job_as`) makes a study processed by one
worker at a time even when a message is delivered twice:

* two workers racing: one claims, the other sees ``busy`` and retries later, then ``gone``;
* a worker killed mid-job: its message comes back at once, but the study stays ``busy``
  until the dead worker's lease runs out (:data:`~dicom_node.store_leases.WORKER_LEASE_S`),
  then another worker takes it over;
* an ingest node killed between queueing a study and sending its message: any scheduler
  sends again the studies queued and unclaimed for a while (:meth:`Scheduler sweep
  <dicom_node.store.Store.orphaned_jobs>`).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Retries, ShutdownNotifications, TimeLimit

from dicom_node.store import Store

log = logging.getLogger(__name__)
QUEUE = "cxr-node-studies"
ACTOR = "process_study"
JOB_TIME_LIMIT_MS = 3_600_000
"""A study may take long (many instances, a slow disk): an hour before Dramatiq gives up."""
RETRY_BACKOFF_MS = (1_000, 10_000)
"""A ``busy`` study is tried again after 1 s, then up to 10 s (the lease is 15 s)."""
LEASE_REFRESH_S = 2.0


class StudyBusy(Exception):
    """A live worker holds the study: the message is retried later (Dramatiq Retries)."""


def process_id(role: str) -> str:
    """This process, as the store names it: ``host:pid:role``."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}"


def make_broker(url: str) -> RabbitmqBroker:
    broker = RabbitmqBroker(url=url, confirm_delivery=True, middleware=[
        TimeLimit(time_limit=JOB_TIME_LIMIT_MS), ShutdownNotifications(),
        Retries(max_retries=10_000, min_backoff=RETRY_BACKOFF_MS[0],
                max_backoff=RETRY_BACKOFF_MS[1])])
    return broker


class BrokerJobs:
    """The job queue of the ingest role: :meth:`submit` publishes a study id.

    Parameters
    ----------
    url:
        ``amqp://user:password@host:port/vhost``.
    handle:
        What a worker does with a study id (None in an ingest-only process, where the
        actor is declared but never run).
    """

    def __init__(self, *, url: str, handle: Callable[[int], None] | None = None) -> None:
        self.broker = make_broker(url)
        self._handle = handle

        def process_study(study_id: int) -> None:
            if self._handle is None:
                raise RuntimeError("this process does not run jobs")
            self._handle(int(study_id))

        declare = dramatiq.actor(broker=self.broker, queue_name=QUEUE, actor_name=ACTOR,
                                 time_limit=JOB_TIME_LIMIT_MS)
        self.actor: Any = declare(process_study)

    def submit(self, study_id: int) -> None:
        self.actor.send(study_id)

    def take(self, timeout: float) -> int | None:  # the JobQueue protocol's pull side
        raise RuntimeError("broker jobs are pushed to the workers, not taken")

    def close(self) -> None:
        self.broker.close()


class Leases:
    """Keeps this process's workers alive in the store (and says what each holds)."""

    def __init__(self, *, store: Store, stop: threading.Event) -> None:
        self.store = store
        self.stop_event = stop
        self.current: dict[str, int | None] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="leases", daemon=True)

    def register(self, worker_id: str, role: str) -> None:
        self.store.register_worker(worker_id, role)
        with self._lock:
            self.current[worker_id] = None

    def holding(self, worker_id: str, study_id: int | None) -> None:
        with self._lock:
            self.current[worker_id] = study_id
        self.refresh()

    def start(self) -> None:
        self._thread.start()

    def refresh(self) -> None:
        with self._lock:
            snapshot = dict(self.current)
        self.store.workers_alive(snapshot)

    def _run(self) -> None:
        while not self.stop_event.wait(LEASE_REFRESH_S):
            try:
                self.refresh()
            except Exception as error:  # the store is away: the next beat tries again
                log.warning("lease refresh failed", extra={"fields": {
                    "error": type(error).__name__}})


class BrokerWorkers:
    """Runs studies from the broker on ``threads`` Dramatiq worker threads.

    Parameters
    ----------
    jobs:
        The broker (its actor calls :meth:`handle`).
    process:
        Processes one claimed study with the calling thread's engine; it receives the
        worker id and the study id.
    leases:
        Where each worker's lease and current study are kept.
    """

    def __init__(self, *, jobs: BrokerJobs, store: Store, threads: int,
                 process: Callable[[str, int], None], leases: Leases) -> None:
        self.jobs = jobs
        self.store = store
        self.threads = threads
        self.process = process
        self.leases = leases
        self._local = threading.local()
        self._free_ids: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._worker: dramatiq.Worker | None = None
        jobs._handle = self.handle

    def _worker_id(self) -> str:
        """This Dramatiq thread's worker id (registered at start, taken on its first job)."""
        worker_id: str | None = getattr(self._local, "worker_id", None)
        if worker_id is None:
            worker_id = self._local.worker_id = self._free_ids.get()
        return worker_id

    def handle(self, study_id: int) -> None:
        worker_id = self._worker_id()
        claim = self.store.claim_job_as(study_id, worker_id)
        if claim == "gone":
            return
        if claim == "busy":
            raise StudyBusy(f"study {study_id} is held by a live worker")
        self.leases.holding(worker_id, study_id)
        try:
            self.process(worker_id, study_id)
        finally:
            self.leases.holding(worker_id, None)

    def start(self) -> None:
        # every thread is a worker from the start: status shows it alive and idle
        for number in range(1, self.threads + 1):
            worker_id = f"{process_id('worker')}:{number}"
            self.leases.register(worker_id, "worker")
            self._free_ids.put(worker_id)
        worker = dramatiq.Worker(self.jobs.broker, queues={QUEUE, f"{QUEUE}.DQ"},
                                 worker_threads=self.threads, worker_timeout=500)
        # hold no more messages than threads: a killed worker strands fewer, and an idle
        # one does not watch messages wait in a busy one's buffer
        worker.queue_prefetch = self.threads
        worker.start()
        self._worker = worker

    def stop(self, timeout_s: float) -> None:
        """Drain: running jobs finish (or are returned), prefetched messages go back."""
        if self._worker is not None:
            self._worker.stop(timeout=int(timeout_s * 1000))
            self._worker = None
