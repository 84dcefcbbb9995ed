"""A destination that is down: retried with backoff and delivered once it is up; one that
stays down: dead-lettered, shown by ``cxr-node status``, requeued by ``cxr-node retry``."""

from __future__ import annotations

import json
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import ComprehensiveSRStorage, SegmentationStorage

from tests.node.node_helpers import (
    DX_NIH,
    NodeProcess,
    Storescp,
    copy_with_new_uids,
    free_port,
    storescu,
    wait_for,
)


def _deliveries(node: NodeProcess, destination: str) -> list[tuple]:
    return node.query("SELECT state, attempts, last_error FROM deliveries "
                      "WHERE destination = ?", (destination,))


def test_destination_down_then_up_and_dead_letter_then_retry(tmp_path: Path,
                                                            processes: list) -> None:
    late = Storescp(tmp_path / "late", ae_title="LATE")
    never = Storescp(tmp_path / "never", ae_title="NEVER")
    processes += [late, never]
    retry = "[retry]\nmax_attempts = 4\ninitial_backoff_s = 1.0\nmultiplier = 1.0\n"
    node = NodeProcess(tmp_path, extra=retry, destinations=[
        ("late", "LATE", late.port), ("never", "NEVER", never.port)])
    processes.append(node)
    node.start()
    image = copy_with_new_uids(DX_NIH, tmp_path / "in")
    assert storescu([image], node.port).returncode == 0

    # 'late' is down: attempts fail and are counted, nothing is lost
    wait_for(lambda: any(a >= 1 for _, a, _ in _deliveries(node, "late")), 90,
             "a failed delivery attempt")
    assert all(state == "pending" for state, _, _ in _deliveries(node, "late"))
    assert "association" in _deliveries(node, "late")[0][2]
    late.start()
    wait_for(lambda: all(s == "sent" for s, _, _ in _deliveries(node, "late")), 30,
             "delivery after the destination came up")
    assert len(late.received()) == 2 and set(late.received().values()) == {1}

    # 'never' stays down: dead after max_attempts, visible to the operator
    wait_for(lambda: all(s == "dead" for s, _, _ in _deliveries(node, "never")), 30,
             "dead-lettered deliveries")
    assert all(a == 4 for _, a, _ in _deliveries(node, "never"))
    report = json.loads(node.cli("status", "--json").stdout)
    assert report["counts"]["deliveries"] == {"sent": 2, "dead": 2}
    assert sum(1 for f in report["failures"] if f["state"] == "dead") == 2
    code, metrics = node.http("/metrics")
    assert 'cxr_node_deliveries_dead_total{destination="never"} 2.0' in metrics

    never.start()
    requeued = node.cli("retry")
    assert requeued.returncode == 0 and "requeued 2 deliveries" in requeued.stdout
    wait_for(lambda: all(s == "sent" for s, _, _ in _deliveries(node, "never")), 30,
             "delivery after cxr-node retry")
    assert len(never.received()) == 2 and set(never.received().values()) == {1}
    # the destination that already had them got nothing twice
    assert set(late.received().values()) == {1} and len(late.received()) == 2
    assert node.stop() == 0



def test_destination_refusing_a_sop_class_fails_only_that_result(tmp_path: Path,
                                                                 processes: list) -> None:
    """A peer that accepts SEG and SR but not secondary capture (the overlay): SEG and SR
    are delivered, the overlay is dead-lettered with the reason, the sender keeps going."""
    peer = AE(ae_title="SEGONLY")
    for sop_class in (SegmentationStorage, ComprehensiveSRStorage):
        peer.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    stored: list[str] = []
    associations: list[str] = []

    def on_store(event: evt.Event) -> int:
        stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000
    port = free_port()
    server = peer.start_server(("127.0.0.1", port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_ESTABLISHED, lambda event: associations.append("open"))])
    processes.append(_Shutdown(server))
    node = NodeProcess(tmp_path, destinations=[("segonly", "SEGONLY", port)],
                       extra="[retry]\nmax_attempts = 1\n")
    node.config_path.write_text(node.config_path.read_text().replace(
        "[security]", "overlay = true\n[security]"))
    processes.append(node)
    node.start()
    for _ in range(2):
        image = copy_with_new_uids(DX_NIH, tmp_path / "in")
        assert storescu([image], node.port).returncode == 0
    rows = wait_for(lambda: (r := node.query(
        "SELECT r.kind, d.state, d.last_error FROM deliveries d "
        "JOIN results r ON r.sop_uid = d.result_uid")) and len(r) == 6 and
        all(s != "pending" for _, s, _ in r) and r, 90, "six settled deliveries")
    assert sorted((kind, state) for kind, state, _ in rows) == [
        ("overlay", "dead"), ("overlay", "dead"), ("seg", "sent"), ("seg", "sent"),
        ("sr", "sent"), ("sr", "sent")]
    assert all("presentation context" in (error or "") for kind, _, error in rows
               if kind == "overlay")
    # nothing went out for them: no attempt on record, so nothing in doubt
    assert node.query("SELECT COUNT(*) FROM attempts a JOIN results r ON "
                      "r.sop_uid = a.result_uid WHERE r.kind = 'overlay'") == [(0,)]
    assert len(stored) == len(set(stored)) == 4
    assert len(associations) == 2  # one per study, not one per file


class _Shutdown:
    def __init__(self, server: object) -> None:
        self.server = server

    def stop(self) -> None:
        self.server.shutdown()  # type: ignore[attr-defined]
