"""A destination that is down: retried with backoff and delivered once it is up; one that
stays down: dead-lettered, shown by ``cxr-node status``, requeued by ``cxr-node retry``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.node.node_helpers import (
    DX_NIH,
    NodeProcess,
    Storescp,
    copy_with_new_uids,
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

