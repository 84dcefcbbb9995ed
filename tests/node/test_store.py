"""The job store's state machine, on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dicom_node.config import RetryPolicy
from dicom_node.store import Result, Store
from dicom_node.store_leases import WORKER_LEASE_S


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Opens the same store each call (a restart opens it again)."""
    if request.param == "sqlite":
        return lambda: Store(path=tmp_path / "node.sqlite")
    url = request.getfixturevalue("postgres").new_database()
    return lambda: Store(url=url)


def _receive(store: Store, study: str, sop: str, now: float) -> bool:
    return store.record_instance(study_uid=study, sop_uid=sop, sop_class="1.2", calling_ae="A",
                                 path=Path(f"/spool/{sop}.dcm"), now=now)


def _one_pending_delivery(store: Store) -> int:
    """A study processed into one result with one delivery to destination ``a``."""
    _receive(store, "1.1", "1.1.1", now=0.0)
    [study_id] = store.queue_quiet_studies(0.0, now=1.0)
    store.claim_job(study_id)
    store.record_outcome(sop_uid="1.1.1", state="processed",
                         results=[Result("9.1", "1.1.1", "seg", Path("/r/9.1.dcm"))])
    store.finish_job(study_id, ["a"])
    return study_id


def test_quiet_period_then_claim_then_deliveries_once(make_store: Callable[[], Store]) -> None:
    store = make_store()
    assert _receive(store, "1.1", "1.1.1", now=100.0)
    assert not _receive(store, "1.1", "1.1.1", now=101.0)  # a repeat is not a new instance
    assert store.queue_quiet_studies(5.0, now=104.0) == []  # still within the quiet period
    [study_id] = store.queue_quiet_studies(5.0, now=106.5)
    assert store.claim_job(study_id) and not store.claim_job(study_id)
    [instance] = store.pending_instances(study_id)
    store.record_outcome(sop_uid=instance.sop_uid, state="processed", results=[
        Result("9.1", "1.1.1", "seg", Path("/r/9.1.dcm")),
        Result("9.2", "1.1.1", "sr", Path("/r/9.2.dcm"))])
    assert store.finish_job(study_id, ["a", "b"]) == 4
    assert store.finish_job(study_id, ["a", "b"]) == 0  # never twice per destination
    groups = store.due_deliveries()
    assert sorted(groups) == [(study_id, "a"), (study_id, "b")]
    for delivery in groups[(study_id, "a")]:
        store.mark_sent(delivery)
    assert store.study_fully_sent(study_id, "a") and not store.study_fully_sent(study_id, "b")
    assert sorted(store.due_deliveries()) == [(study_id, "b")]


def test_failed_attempts_back_off_then_dead_letter_then_retry(
        make_store: Callable[[], Store]) -> None:
    store = make_store()
    study_id = _one_pending_delivery(store)
    policy = RetryPolicy(max_attempts=2, initial_backoff_s=60.0, max_backoff_s=60.0)
    [delivery] = store.due_deliveries()[(study_id, "a")]
    assert not store.mark_failed(delivery, "association rejected", policy)
    assert store.due_deliveries() == {}  # backing off
    [delivery] = store.due_deliveries(now=10**12)[(study_id, "a")]
    assert store.mark_failed(delivery, "association rejected", policy)  # dead now
    assert store.due_deliveries(now=10**12) == {}
    assert store.counts()["deliveries"] == {"dead": 1}
    assert [f["state"] for f in store.failures()] == ["dead"]
    assert store.retry() == {"deliveries": 1, "instances": 0}
    assert store.counts()["deliveries"] == {"pending": 1}
    assert list(store.due_deliveries())


def test_restart_requeues_interrupted_jobs_and_late_instances_reopen(
        make_store: Callable[[], Store]) -> None:
    store = make_store()
    _receive(store, "1.1", "1.1.1", now=0.0)
    [study_id] = store.queue_quiet_studies(0.0, now=1.0)
    store.claim_job(study_id)
    _receive(store, "1.1", "1.1.2", now=2.0)  # arrives while processing
    store.close()
    reopened = make_store()
    assert reopened.resume() == [study_id]
    assert reopened.claim_job(study_id)
    for instance in reopened.pending_instances(study_id):
        reopened.record_outcome(sop_uid=instance.sop_uid, state="ignored", reason="filter")
    reopened.finish_job(study_id, [])
    assert reopened.counts()["studies"] == {"done": 1}
    _receive(reopened, "1.1", "1.1.3", now=3.0)
    assert reopened.counts()["studies"] == {"receiving": 1}


def test_failed_instances_are_requeued_by_retry(make_store: Callable[[], Store]) -> None:
    store = make_store()
    _receive(store, "1.1", "1.1.1", now=0.0)
    [study_id] = store.queue_quiet_studies(0.0, now=1.0)
    store.claim_job(study_id)
    store.record_outcome(sop_uid="1.1.1", state="failed", reason="internal error (X)")
    store.finish_job(study_id, [])
    assert store.retry(study_uid="1.1") == {"deliveries": 0, "instances": 1}
    assert store.queue_quiet_studies(10.0) == [study_id]  # now, without a quiet period


def test_claims_with_leases_take_a_study_once_and_take_over_from_the_dead(
        make_store: Callable[[], Store]) -> None:
    store = make_store()
    _receive(store, "2.1", "2.1.1", now=100.0)
    [study_id] = store.queue_quiet_studies(1.0, now=200.0)
    store.register_worker("a", "worker")
    store.register_worker("b", "worker")
    assert store.claim_job_as(study_id, "a") == "claimed"
    assert store.claim_job_as(study_id, "b") == "busy"  # a is alive
    # a's lease runs out (killed): b takes the study over, and a sweep offers it again
    later = time.time() + WORKER_LEASE_S + 1
    store.workers_alive({"b": None})
    assert study_id in store.orphaned_jobs(60.0, now=later)
    assert store.claim_job_as(study_id, "b", now=later) == "claimed"
    store.record_outcome(sop_uid="2.1.1", state="processed",
                         results=[Result("8.1", "2.1.1", "seg", Path("/r/8.1.dcm"))])
    store.finish_job(study_id, ["pacs"])
    assert store.claim_job_as(study_id, "a") == "gone"
    [alive_b] = [w for w in store.workers(now=later) if w["id"] == "b"]
    assert alive_b["alive"] == 0  # b's own lease is checked against the same clock


def test_deliveries_are_claimed_by_one_sender_and_freed_by_its_death(
        make_store: Callable[[], Store]) -> None:
    store = make_store()
    _receive(store, "3.1", "3.1.1", now=100.0)
    [study_id] = store.queue_quiet_studies(1.0, now=200.0)
    assert store.claim_job(study_id)
    store.record_outcome(sop_uid="3.1.1", state="processed",
                         results=[Result("7.1", "3.1.1", "seg", Path("/r/7.1.dcm"))])
    store.finish_job(study_id, ["pacs"])
    store.register_worker("p1", "worker")
    store.register_worker("p2", "worker")
    assert len(store.claim_deliveries("pacs", "p1")) == 1
    assert store.claim_deliveries("pacs", "p2") == {}  # p1 holds it and is alive
    later = time.time() + WORKER_LEASE_S + 1
    store._connection().execute("UPDATE workers SET seen = ? WHERE id = 'p2'", (later,))
    [(key, [delivery])] = store.claim_deliveries("pacs", "p2", now=later).items()
    store.mark_sent(delivery)
    assert store.claim_deliveries("pacs", "p1", now=later) == {}

def test_attempt_without_a_status_leaves_the_delivery_in_doubt(
        make_store: Callable[[], Store]) -> None:
    """An attempt is on disk before its request goes out; one that never got a status
    (the process died, the association was lost) marks the delivery in doubt until a
    later attempt gets one."""
    store = make_store()
    study_id = _one_pending_delivery(store)
    [delivery] = store.due_deliveries()[(study_id, "a")]
    assert not delivery.in_doubt
    store.begin_attempt(delivery)
    store.close()  # as if killed here: the attempt was committed, its answer never came
    reopened = make_store()
    [delivery] = reopened.due_deliveries()[(study_id, "a")]
    assert delivery.in_doubt
    query = reopened.begin_attempt(delivery, "c-find")
    reopened.end_attempt(query, 0, "not held")
    assert reopened.due_deliveries()[(study_id, "a")][0].in_doubt  # a query is no C-STORE
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=1.0)
    attempt = reopened.begin_attempt(delivery)
    reopened.mark_failed(delivery, "status 0xA700", policy, attempt=attempt, status=0xA700)
    [delivery] = reopened.due_deliveries(now=10**12)[(study_id, "a")]
    assert not delivery.in_doubt  # the destination answered: it did not store it
    attempt = reopened.begin_attempt(delivery)
    reopened.mark_sent(delivery, attempt=attempt, status=0)
    rows = reopened._connection().execute(
        "SELECT kind, status FROM attempts ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("c-store", None), ("c-find", 0),
                                        ("c-store", 0xA700), ("c-store", 0)]
    assert reopened.counts()["deliveries"] == {"sent": 1}
