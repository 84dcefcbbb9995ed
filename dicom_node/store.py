"""The persistent state of studies, instances, results and deliveries (SQLite on one
machine, PostgreSQL for many: :mod:`dicom_node.db`).

State machines (every transition is one committed transaction, so a crash at any point
leaves a state the node resumes from):

* study: ``receiving`` -(quiet period)-> ``queued`` -(worker claims)-> ``processing``
  -> ``done`` (or back to ``receiving`` when instances arrived meanwhile). A new instance
  moves a ``queued``/``done`` study back to ``receiving``. On start, ``processing``
  becomes ``queued`` again (the worker died with it).
* instance: ``received`` -> ``processed`` | ``ignored`` | ``refused`` | ``failed``.
* delivery (one result to one destination): ``pending`` -> ``sent`` | ``dead`` (after
  the retry policy's bounded attempts); ``cxr-node retry`` moves ``dead`` to ``pending``.
* attempt (one C-STORE, or one C-FIND for an unconfirmed C-STORE, of a delivery): a row
  committed before the request goes out, completed with the destination's status (or
  none) in the transaction that moves the delivery on. A delivery whose last C-STORE has
  no status is *in doubt*: the destination may or may not hold it.

Each connection belongs to one thread; with SQLite, WAL lets the SCP, the workers, the
sender and a ``cxr-node status`` process use the file at once; with PostgreSQL any number
of ingest and worker processes on any machine share it. Every statement is in the
dialect both speak.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dicom_node.config import RetryPolicy
from dicom_node.db import STORE_ERRORS, Connection, ConnectionPool, Row
from dicom_node.store_leases import LeasesMixin

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id {id},
    study_uid TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    first_received {float} NOT NULL,
    last_received {float} NOT NULL,
    job_started {float},
    job_finished {float},
    owner TEXT,
    queued_at {float}
);
CREATE INDEX IF NOT EXISTS studies_state ON studies(state);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    sop_class TEXT NOT NULL,
    path TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    received_at {float} NOT NULL,
    state TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_id, state);
CREATE TABLE IF NOT EXISTS results (
    sop_uid TEXT PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    source_sop_uid TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    created_at {float} NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    result_uid TEXT NOT NULL REFERENCES results(sop_uid),
    destination TEXT NOT NULL,
    study_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt {float} NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at {float},
    owner TEXT,
    PRIMARY KEY (result_uid, destination)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, next_attempt);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    started {float} NOT NULL,
    seen {float} NOT NULL,
    current_study INTEGER,
    jobs_done INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS attempts (
    id {id},
    result_uid TEXT NOT NULL,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    started_at {float} NOT NULL,
    ended_at {float},
    status INTEGER,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts(result_uid, destination, id);
CREATE TABLE IF NOT EXISTS heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at {float} NOT NULL
);
"""


MIGRATIONS = (("studies", "owner", "TEXT"), ("studies", "queued_at", "{float}"),
              ("deliveries", "owner", "TEXT"))


@dataclass(frozen=True)
class Instance:
    sop_uid: str
    study_id: int
    sop_class: str
    path: Path


@dataclass(frozen=True)
class Result:
    sop_uid: str
    source_sop_uid: str
    kind: str
    path: Path


@dataclass(frozen=True)
class Delivery:
    result_uid: str
    destination: str
    study_id: int
    path: Path
    attempts: int
    in_doubt: bool = False
    """The last C-STORE of it got no status (the node died during it, or the association
    was lost): the destination may hold it already."""


ATTEMPT_KINDS = ("c-store", "c-find")
# whether the delivery's last C-STORE got no status, in SQL (d: the deliveries row)
_IN_DOUBT = (
    "(SELECT a.status IS NULL FROM attempts a WHERE a.result_uid = d.result_uid "
    "AND a.destination = d.destination AND a.kind = 'c-store' ORDER BY a.id DESC LIMIT 1)")


class Store(LeasesMixin):
    """Thread-safe access to the node's database (the claims of many workers are in
    :class:`~dicom_node.store_leases.LeasesMixin`).

    Parameters
    ----------
    path:
        The SQLite file (created with its schema if missing); or
    url:
        A ``postgresql://`` URL (tables created if missing).
    """

    def __init__(self, *, path: Path | None = None, url: str | None = None) -> None:
        if (path is None) == (url is None):
            raise ValueError("path or url: give exactly one")
        self.path = Path(path) if path is not None else None
        self._pool = ConnectionPool(url if url is not None else Path(str(path)))
        self._connection().create_schema(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added since the first schema (an existing database gets them)."""
        db = self._connection()
        for table, column, kind in MIGRATIONS:
            try:
                db.execute(f"SELECT {column} FROM {table} LIMIT 0")  # noqa: S608 (fixed)
            except STORE_ERRORS:
                kind = kind.format(float="DOUBLE PRECISION" if db.dialect == "postgresql"
                                   else "REAL")
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def describe(self) -> str:
        return self._pool.describe()

    # --- connections -------------------------------------------------------------

    def _connection(self) -> Connection:
        return self._pool.get()

    def sync_every_commit(self) -> None:
        """This thread's commits are fsync'ed (WAL ``synchronous=FULL``): a sender's record
        of an attempt and of its response then survives a power loss too, not only a
        killed process. (PostgreSQL commits are fsync'ed by default.)"""
        db = self._connection()
        if db.dialect == "sqlite":
            db.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._connection().transaction() as db:
            yield db

    def close(self) -> None:
        self._pool.close()

    # --- ingest ------------------------------------------------------------------

    def record_instance(self, *, study_uid: str, sop_uid: str, sop_class: str, path: Path,
                        calling_ae: str, now: float | None = None) -> bool:
        """Register a received instance; return False when it was already known.

        The study goes (back) to ``receiving`` so its quiet period restarts.
        """
        now = time.time() if now is None else now
        with self._transaction() as db:
            db.execute(
                "INSERT INTO studies(study_uid, state, first_received, last_received) "
                "VALUES (?, 'receiving', ?, ?) ON CONFLICT(study_uid) DO UPDATE SET "
                "last_received = excluded.last_received, state = CASE WHEN studies.state = "
                "'processing' THEN studies.state ELSE 'receiving' END",
                (study_uid, now, now))
            study_id = db.execute("SELECT id FROM studies WHERE study_uid = ?",
                                  (study_uid,)).fetchone()[0]
            cursor = db.execute(
                "INSERT INTO instances(sop_uid, study_id, sop_class, path, "
                "calling_ae, received_at, state) VALUES (?, ?, ?, ?, ?, ?, 'received') "
                "ON CONFLICT DO NOTHING",
                (sop_uid, study_id, sop_class, str(path), calling_ae, now))
            return cursor.rowcount == 1

    def heartbeat(self) -> None:
        """A write that proves the database can commit (raises one of
        :data:`dicom_node.db.STORE_ERRORS` if not)."""
        with self._transaction() as db:
            db.execute("INSERT INTO heartbeat(id, at) VALUES (1, ?) ON CONFLICT(id) DO "
                       "UPDATE SET at = excluded.at", (time.time(),))

    def instance_versions(self, sop_uid: str) -> list[tuple[str, Path]]:
        """``(study UID, file)`` of each accepted version of an instance (none: new)."""
        rows = self._connection().execute(
            "SELECT s.study_uid, i.path FROM instances i JOIN studies s ON s.id = i.study_id "
            "WHERE i.sop_uid = ? OR i.sop_uid LIKE ? ESCAPE '!' ORDER BY i.received_at",
            (sop_uid, sop_uid + "~%"))
        return [(str(r[0]), Path(r[1])) for r in rows]

    def known_instances(self) -> set[str]:
        return {row[0] for row in self._connection().execute("SELECT sop_uid FROM instances")}

    # --- jobs --------------------------------------------------------------------

    def queue_quiet_studies(self, quiet_period_s: float, now: float | None = None) -> list[int]:
        """Move studies quiet for ``quiet_period_s`` to ``queued``; return their ids."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            ids = [row[0] for row in db.execute(
                "SELECT id FROM studies WHERE state = 'receiving' AND last_received <= ?",
                (now - quiet_period_s,))]
            db.executemany("UPDATE studies SET state = 'queued', queued_at = ? WHERE id = ?",
                           [(now, i) for i in ids])
        return ids

    def resume(self) -> list[int]:
        """After a restart: jobs that were running are queued again; return queued ids."""
        with self._transaction() as db:
            db.execute("UPDATE studies SET state = 'queued', owner = NULL "
                       "WHERE state = 'processing'")
            db.execute("UPDATE deliveries SET owner = NULL WHERE owner IS NOT NULL")
            return [row[0] for row in db.execute(
                "SELECT id FROM studies WHERE state = 'queued' ORDER BY last_received")]

    def claim_job(self, study_id: int) -> bool:
        """Atomically take a queued study for processing (False: someone else did, or
        instances arrived and it is receiving again)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE studies SET state = 'processing', job_started = ? "
                "WHERE id = ? AND state = 'queued'", (time.time(), study_id))
            return cursor.rowcount == 1

    def requeue(self, study_id: int) -> None:
        """A job interrupted by an error (a full disk) goes back to ``queued``."""
        with self._transaction() as db:
            db.execute("UPDATE studies SET state = 'queued', owner = NULL, queued_at = ? "
                       "WHERE id = ? AND state = 'processing'", (time.time(), study_id))

    def pending_instances(self, study_id: int) -> list[Instance]:
        rows = self._connection().execute(
            "SELECT sop_uid, study_id, sop_class, path FROM instances "
            "WHERE study_id = ? AND state = 'received' ORDER BY received_at", (study_id,))
        return [Instance(r[0], r[1], r[2], Path(r[3])) for r in rows]

    def record_outcome(self, *, sop_uid: str, state: str, reason: str | None = None,
                       path: Path | None = None, results: Iterable[Result] = ()) -> None:
        """Store what became of one instance (and its results) in one transaction."""
        if state not in {"processed", "ignored", "refused", "failed"}:
            raise ValueError(f"state: unknown instance state {state!r}")
        now = time.time()
        with self._transaction() as db:
            study_id = db.execute("SELECT study_id FROM instances WHERE sop_uid = ?",
                                  (sop_uid,)).fetchone()[0]
            db.executemany(
                "INSERT INTO results(sop_uid, study_id, source_sop_uid, kind, path, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(r.sop_uid, study_id, r.source_sop_uid, r.kind, str(r.path), now)
                 for r in results])
            db.execute("UPDATE instances SET state = ?, reason = ?, path = COALESCE(?, path) "
                       "WHERE sop_uid = ?",
                       (state, reason, str(path) if path else None, sop_uid))

    def finish_job(self, study_id: int, destinations: Iterable[str]) -> int:
        """Create the deliveries of every result of the study (each result once per
        destination, whatever happened before) and close the job; return how many
        deliveries are new."""
        with self._transaction() as db:
            created = sum(db.execute(
                "INSERT INTO deliveries(result_uid, destination, study_id, state) "
                "SELECT sop_uid, ?, study_id, 'pending' FROM results WHERE study_id = ? "
                "ON CONFLICT DO NOTHING", (destination, study_id)).rowcount
                for destination in destinations)
            waiting = db.execute("SELECT COUNT(*) FROM instances WHERE study_id = ? AND "
                                 "state = 'received'", (study_id,)).fetchone()[0]
            db.execute("UPDATE studies SET state = ?, job_finished = ? WHERE id = ?",
                       ("receiving" if waiting else "done", time.time(), study_id))
        return created

    # --- deliveries --------------------------------------------------------------

    def due_deliveries(self, now: float | None = None, *, destination: str | None = None
                       ) -> dict[tuple[int, str], list[Delivery]]:
        """Pending deliveries whose backoff has elapsed (of one destination, or all),
        grouped per (study, destination) so a sender opens one association per group."""
        now = time.time() if now is None else now
        only = "" if destination is None else " AND d.destination = ?"
        rows = self._connection().execute(
            "SELECT d.result_uid, d.destination, d.study_id, r.path, d.attempts, "
            f"COALESCE({_IN_DOUBT}, FALSE) "
            "FROM deliveries d JOIN results r ON r.sop_uid = d.result_uid "
            "WHERE d.state = 'pending' AND d.next_attempt <= ?" + only +
            " ORDER BY d.study_id, d.destination, r.kind",
            (now,) if destination is None else (now, destination))
        groups: dict[tuple[int, str], list[Delivery]] = {}
        for r in rows:
            groups.setdefault((r[2], r[1]), []).append(
                Delivery(r[0], r[1], r[2], Path(r[3]), r[4], bool(r[5])))
        return groups

    def dead_letter_unconfigured(self, destinations: Iterable[str]) -> int:
        """Pending deliveries to destinations no longer configured become ``dead``."""
        names = list(destinations)
        # "NOT IN ()" is valid SQLite but not PostgreSQL: no destination at all is "true"
        kept = f"destination NOT IN ({','.join('?' * len(names))})" if names else "TRUE"
        with self._transaction() as db:
            return db.execute(
                "UPDATE deliveries SET state = 'dead', last_error = 'destination is no "
                f"longer configured' WHERE state = 'pending' AND {kept}",  # noqa: S608
                names).rowcount

    def begin_attempt(self, delivery: Delivery, kind: str = "c-store") -> int:
        """Record, before the request goes out, that ``delivery`` is being attempted
        (``kind``: ``c-store``, or ``c-find`` to ask the destination whether it holds
        it); return the attempt's id for :meth:`end_attempt`, :meth:`mark_sent` or
        :meth:`mark_failed`."""
        if kind not in ATTEMPT_KINDS:
            raise ValueError(f"kind: unknown attempt kind {kind!r}")
        with self._transaction() as db:
            row = db.execute(
                "INSERT INTO attempts(result_uid, destination, kind, started_at) "
                "VALUES (?, ?, ?, ?) RETURNING id", (delivery.result_uid, delivery.destination,
                                                     kind, time.time())).fetchone()
            return int(row[0])

    @staticmethod
    def _end_attempt(db: Connection, attempt: int | None, status: int | None,
                     detail: str | None) -> None:
        if attempt is not None:
            db.execute("UPDATE attempts SET ended_at = ?, status = ?, detail = ? WHERE id = ?",
                       (time.time(), status, detail, attempt))

    def end_attempt(self, attempt: int, status: int | None, detail: str | None = None) -> None:
        """Record an attempt's outcome that does not move its delivery on (a C-FIND that
        did not find the instance)."""
        with self._transaction() as db:
            self._end_attempt(db, attempt, status, detail)

    def mark_sent(self, delivery: Delivery, *, attempt: int | None = None, status: int = 0,
                  detail: str | None = None) -> None:
        """The destination holds the result: it answered ``status`` to ``attempt``
        (recorded in the same transaction)."""
        with self._transaction() as db:
            self._end_attempt(db, attempt, status, detail)
            db.execute("UPDATE deliveries SET state = 'sent', sent_at = ?, last_error = NULL, "
                       "owner = NULL WHERE result_uid = ? AND destination = ? "
                       "AND state = 'pending'",
                       (time.time(), delivery.result_uid, delivery.destination))

    def mark_failed(self, delivery: Delivery, error: str, policy: RetryPolicy, *,
                    attempt: int | None = None, status: int | None = None) -> bool:
        """Count a failed attempt (ending ``attempt`` with the destination's ``status``,
        None when it gave none, in the same transaction); return True when the delivery
        is now dead-lettered."""
        attempts = delivery.attempts + 1
        dead = attempts >= policy.max_attempts
        with self._transaction() as db:
            self._end_attempt(db, attempt, status, error[:500])
            db.execute(
                "UPDATE deliveries SET attempts = ?, last_error = ?, state = ?, "
                "next_attempt = ?, owner = NULL WHERE result_uid = ? AND destination = ? "
                "AND state = 'pending'",
                (attempts, error[:500], "dead" if dead else "pending",
                 time.time() + policy.delay_after(attempts), delivery.result_uid,
                 delivery.destination))
        return dead

    def study_uid(self, study_id: int) -> str:
        return str(self._connection().execute(
            "SELECT study_uid FROM studies WHERE id = ?", (study_id,)).fetchone()[0])

    def study_last_received(self, study_id: int) -> float:
        return float(self._connection().execute(
            "SELECT last_received FROM studies WHERE id = ?", (study_id,)).fetchone()[0])

    def study_fully_sent(self, study_id: int, destination: str) -> bool:
        return bool(self._connection().execute(
            "SELECT COUNT(*) FROM deliveries WHERE study_id = ? AND destination = ? "
            "AND state != 'sent'", (study_id, destination)).fetchone()[0] == 0)

    # --- operator ----------------------------------------------------------------

    def retry(self, *, study_uid: str | None = None) -> dict[str, int]:
        """Requeue dead deliveries and failed instances (of one study, or all)."""
        where, args = ("", ()) if study_uid is None else (
            " AND study_id = (SELECT id FROM studies WHERE study_uid = ?)", (study_uid,))
        with self._transaction() as db:
            deliveries = db.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt = 0 "
                "WHERE state = 'dead'" + where, args).rowcount
            instances = db.execute(
                "UPDATE instances SET state = 'received', reason = NULL "
                "WHERE state = 'failed'" + where, args).rowcount
            # a study with requeued instances runs again without waiting a quiet period
            db.execute("UPDATE studies SET state = 'receiving', last_received = 0 WHERE id IN "
                       "(SELECT study_id FROM instances WHERE state = 'received') "
                       "AND state IN ('done', 'receiving')")
        return {"deliveries": deliveries, "instances": instances}

    def counts(self) -> dict[str, dict[str, int]]:
        db = self._connection()
        return {table: {row[0]: row[1] for row in db.execute(
            f"SELECT state, COUNT(*) FROM {table} GROUP BY state")}  # noqa: S608 (fixed names)
            for table in ("studies", "instances", "deliveries")}

    def studies(self, limit: int = 50) -> list[Row]:
        return self._connection().execute(
            "SELECT s.id, s.study_uid, s.state, s.last_received, "
            "(SELECT COUNT(*) FROM instances i WHERE i.study_id = s.id) AS instances, "
            "(SELECT COUNT(*) FROM results r WHERE r.study_id = s.id) AS results, "
            "(SELECT COUNT(*) FROM deliveries d WHERE d.study_id = s.id "
            " AND d.state = 'sent') AS sent "
            "FROM studies s ORDER BY s.last_received DESC LIMIT ?", (limit,)).fetchall()

    def failures(self) -> list[Row]:
        db = self._connection()
        instances = db.execute(
            "SELECT 'instance' AS kind, s.id AS study_id, i.sop_uid AS uid, i.state, "
            "i.reason AS detail FROM instances i JOIN studies s ON s.id = i.study_id "
            "WHERE i.state IN ('refused', 'failed') ORDER BY i.received_at").fetchall()
        deliveries = db.execute(
            "SELECT 'delivery' AS kind, study_id, result_uid || ' -> ' || destination AS uid, "
            "state, last_error AS detail FROM deliveries WHERE state = 'dead' "
            "OR (state = 'pending' AND attempts > 0)").fetchall()
        return instances + deliveries

    def queue_depth(self) -> int:
        return int(self._connection().execute(
            "SELECT COUNT(*) FROM studies WHERE state IN ('queued', 'processing')"
        ).fetchone()[0])

    def pending_deliveries(self) -> int:
        return int(self._connection().execute(
            "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'").fetchone()[0])


    # --- review page -------------------------------------------------------------

    def study(self, study_id: int) -> Row | None:
        row: Row | None = self._connection().execute(
            "SELECT id, study_uid, state, first_received, last_received, job_started, "
            "job_finished FROM studies WHERE id = ?", (study_id,)).fetchone()
        return row

    def study_instances(self, study_id: int) -> list[Row]:
        """The study's instances in the order they arrived (the page numbers them so)."""
        return self._connection().execute(
            "SELECT sop_uid, sop_class, state, reason, received_at FROM instances "
            "WHERE study_id = ? ORDER BY received_at, sop_uid", (study_id,)).fetchall()

    def study_deliveries(self, study_id: int) -> list[Row]:
        return self._connection().execute(
            "SELECT d.destination, r.kind, r.source_sop_uid, d.state, d.attempts, "
            "d.last_error, d.sent_at FROM deliveries d JOIN results r "
            "ON r.sop_uid = d.result_uid WHERE d.study_id = ? "
            "ORDER BY d.destination, r.kind", (study_id,)).fetchall()

    def study_summaries(self, limit: int = 200, *, study_id: int | None = None
                        ) -> list[Row]:
        """Newest first (or the one ``study_id``), with what the page's state needs."""
        where, args = ("", (limit,)) if study_id is None else (
            "WHERE s.id = ? ", (study_id, limit))
        return self._connection().execute(
            "SELECT s.id, s.state, s.first_received, s.last_received, "
            "(SELECT COUNT(*) FROM instances i WHERE i.study_id = s.id) AS instances, "
            "(SELECT COUNT(*) FROM instances i WHERE i.study_id = s.id "
            " AND i.state = 'processed') AS processed, "
            "(SELECT COUNT(*) FROM instances i WHERE i.study_id = s.id "
            " AND i.state = 'ignored') AS ignored, "
            "(SELECT COUNT(*) FROM instances i WHERE i.study_id = s.id "
            " AND i.state IN ('refused', 'failed')) AS failed, "
            "(SELECT COUNT(*) FROM deliveries d WHERE d.study_id = s.id) AS deliveries, "
            "(SELECT COUNT(*) FROM deliveries d WHERE d.study_id = s.id "
            " AND d.state = 'sent') AS sent, "
            "(SELECT COUNT(*) FROM deliveries d WHERE d.study_id = s.id "
            " AND d.state = 'dead') AS dead "
            "FROM studies s " + where + "ORDER BY s.last_received DESC LIMIT ?", args
        ).fetchall()
