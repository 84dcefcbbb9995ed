"""kill -9 while a C-STORE to a destination is unanswered (the destination holds its
response), then restart: the attempt was on disk, the delivery is in doubt, and the
destination's ``in_doubt`` rule settles it. ``c-find``: a destination that stored it is
asked and gets no second copy; one that did not store it gets it once. ``resend``: the
same file again (same SOP Instance UID, same content), the DIMSE-safe choice."""

from __future__ import annotations

import filecmp
from pathlib import Path

from tests.node.node_destination import HoldingDestination
from tests.node.node_helpers import (
    DEST_AE,
    DX_NIH,
    NodeProcess,
    copy_with_new_uids,
    storescu,
    wait_for,
)


def _attempts(node: NodeProcess, destination: str, result_uid: str) -> list[tuple]:
    return node.query("SELECT kind, status, detail FROM attempts WHERE destination = ? AND "
                      "result_uid = ? ORDER BY id", (destination, result_uid))


def test_unanswered_store_then_kill9_is_settled_by_the_in_doubt_rule(
        tmp_path: Path, processes: list) -> None:
    destinations = {
        "asked": HoldingDestination(tmp_path / "asked", hold_first="stored"),
        "asked-lost": HoldingDestination(tmp_path / "asked-lost", hold_first="dropped"),
        "resent": HoldingDestination(tmp_path / "resent", hold_first="stored")}
    for destination in destinations.values():
        processes.append(destination.start())
    node = NodeProcess(tmp_path / "node", destinations=[
        (name, DEST_AE, d.port) for name, d in destinations.items()],
        in_doubt={"asked": "c-find", "asked-lost": "c-find", "resent": "resend"})
    processes.append(node)
    node.start()
    assert storescu([copy_with_new_uids(DX_NIH, tmp_path / "in")], node.port).returncode == 0
    for destination in destinations.values():
        assert destination.holding.wait(120), "no C-STORE reached a destination"

    # every destination holds the first result's response: its attempt is on disk,
    # with no status
    [(seg_uid,)] = node.query("SELECT sop_uid FROM results WHERE kind = 'seg'")
    for name in destinations:
        assert _attempts(node, name, seg_uid) == [("c-store", None, None)]
    node.kill9()
    for destination in destinations.values():
        destination.release()
    node.start()
    wait_for(lambda: node.query("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'"
                                )[0][0] == 6, 60, "every delivery sent after the restart")

    results = {uid for (uid,) in node.query("SELECT sop_uid FROM results")}
    assert len(results) == 2  # SEG and SR
    asked = destinations["asked"].received()
    assert {u: asked[u] for u in results} == dict.fromkeys(results, 1)
    assert [row[:2] for row in _attempts(node, "asked", seg_uid)] == [
        ("c-store", None), ("c-find", 0)]
    assert _attempts(node, "asked", seg_uid)[1][2] == "held by the destination (C-FIND)"

    lost = destinations["asked-lost"].received()
    assert {u: lost[u] for u in results} == dict.fromkeys(results, 1)
    assert [row[:2] for row in _attempts(node, "asked-lost", seg_uid)] == [
        ("c-store", None), ("c-find", 0), ("c-store", 0)]

    resent = destinations["resent"].received()
    assert resent[seg_uid] == 2 and len(resent) == 2  # the repeat: same UID...
    copies = sorted((tmp_path / "resent").glob(f"{seg_uid}.*.dcm"))
    assert filecmp.cmp(copies[0], copies[1], shallow=False)  # ...and the same content
    metrics = node.http("/metrics")[1]
    for name, settled in (("asked", "held"), ("asked-lost", "resent"), ("resent", "resent")):
        assert (f'cxr_node_deliveries_in_doubt_total{{destination="{name}",'
                f'settled="{settled}"}} 1.0') in metrics, name
    assert node.stop() == 0
