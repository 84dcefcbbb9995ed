"""The job store's claims with leases, for many worker processes on many machines
(:mod:`dicom_node.distributed`): worker registration and leases, studies claimed by one
worker at a time, orphaned jobs, deliveries claimed by one sender process at a time.

A mixin of :class:`dicom_node.store.Store`, apart only to keep each file readable.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_node.db import Connection, Row

if TYPE_CHECKING:
    from dicom_node.store import Delivery

WORKER_LEASE_S = 15.0
"""A worker whose row was not refreshed for this long is dead: its study and its
deliveries in hand may be taken by another worker."""


class LeasesMixin:
    """Needs ``_connection()`` and ``_transaction()`` from :class:`~dicom_node.store.Store`."""

    def _connection(self) -> Connection:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def register_worker(self, worker_id: str, role: str) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute("INSERT INTO workers(id, role, started, seen) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(id) DO UPDATE SET role = excluded.role, "
                       "started = excluded.started, seen = excluded.seen, "
                       "current_study = NULL", (worker_id, role, now, now))

    def workers_alive(self, current: dict[str, int | None]) -> None:
        """Refresh the lease of each worker id; ``current`` is the study in its hands."""
        now = time.time()
        with self._transaction() as db:
            db.executemany("UPDATE workers SET seen = ?, current_study = ? WHERE id = ?",
                           [(now, study, worker) for worker, study in current.items()])

    def worker_finished_job(self, worker_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE workers SET jobs_done = jobs_done + 1, current_study = NULL "
                       "WHERE id = ?", (worker_id,))

    def workers(self, now: float | None = None) -> list[Row]:
        """Every worker that ever registered, with ``alive`` from its lease."""
        cutoff = (time.time() if now is None else now) - WORKER_LEASE_S
        return self._connection().execute(
            "SELECT id, role, started, seen, current_study, jobs_done, "
            "CASE WHEN seen >= ? THEN 1 ELSE 0 END AS alive FROM workers ORDER BY id",
            (cutoff,)).fetchall()

    def workers_alive_count(self) -> int:
        return sum(int(r["alive"]) for r in self.workers() if r["role"] == "worker")

    def claim_job_as(self, study_id: int, owner: str, now: float | None = None) -> str:
        """Take a study for ``owner``: ``claimed``; ``busy`` while a live worker holds it
        (try again later); ``gone`` when there is nothing to do (done, receiving again).

        A study held by a worker whose lease ran out (killed) is taken over.
        """
        now = time.time() if now is None else now
        with self._transaction() as db:
            taken = db.execute(
                "UPDATE studies SET state = 'processing', job_started = ?, owner = ? "
                "WHERE id = ? AND (state = 'queued' OR (state = 'processing' AND "
                "(owner IS NULL OR owner NOT IN (SELECT id FROM workers WHERE seen >= ?))))",
                (now, owner, study_id, now - WORKER_LEASE_S)).rowcount
            if taken:
                return "claimed"
            row = db.execute("SELECT state FROM studies WHERE id = ?", (study_id,)).fetchone()
        return "busy" if row is not None and row[0] == "processing" else "gone"

    def orphaned_jobs(self, older_than_s: float, now: float | None = None) -> list[int]:
        """Studies a broker message may have been lost for: queued and unclaimed for
        ``older_than_s``, or held by a dead worker. Sending them again is harmless
        (a claim takes a study once)."""
        now = time.time() if now is None else now
        rows = self._connection().execute(
            "SELECT id FROM studies WHERE (state = 'queued' AND COALESCE(queued_at, 0) <= ?) "
            "OR (state = 'processing' AND (owner IS NULL OR owner NOT IN "
            "(SELECT id FROM workers WHERE seen >= ?)))",
            (now - older_than_s, now - WORKER_LEASE_S)).fetchall()
        with self._transaction() as db:
            db.executemany("UPDATE studies SET queued_at = ? WHERE id = ? AND state = 'queued'",
                           [(now, r[0]) for r in rows])
        return [int(r[0]) for r in rows]

    def claim_deliveries(self, destination: str, owner: str, now: float | None = None
                         ) -> dict[tuple[int, str], list[Delivery]]:
        """Take the due deliveries of ``destination`` for ``owner`` (free ones, its own,
        and those a dead owner held), grouped per study as :meth:`due_deliveries` groups
        them. A claim is only an owner: the delivery stays ``pending`` until sent."""
        from dicom_node.store import _IN_DOUBT, Delivery  # the store imports this module

        now = time.time() if now is None else now
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET owner = ? WHERE destination = ? AND state = 'pending' "
                "AND next_attempt <= ? AND (owner IS NULL OR owner = ? OR owner NOT IN "
                "(SELECT id FROM workers WHERE seen >= ?))",
                (owner, destination, now, owner, now - WORKER_LEASE_S))
            rows = db.execute(
                "SELECT d.result_uid, d.destination, d.study_id, r.path, d.attempts, "
                f"COALESCE({_IN_DOUBT}, FALSE) "
                "FROM deliveries d JOIN results r ON r.sop_uid = d.result_uid "
                "WHERE d.state = 'pending' AND d.owner = ? AND d.destination = ? "
                "AND d.next_attempt <= ? ORDER BY d.study_id, r.kind",
                (owner, destination, now)).fetchall()
        groups: dict[tuple[int, str], list[Delivery]] = {}
        for r in rows:
            groups.setdefault((r[2], r[1]), []).append(
                Delivery(r[0], r[1], r[2], Path(r[3]), r[4], bool(r[5])))
        return groups
