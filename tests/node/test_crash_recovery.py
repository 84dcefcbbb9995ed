"""kill -9 during ingest and during processing, then restart: every acknowledged instance
is processed and each result reaches the destination exactly once."""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from pynetdicom import AE

from tests.node.node_helpers import (
    DEST_AE,
    DX_NIH,
    NODE_AE,
    PACS_AE,
    NodeProcess,
    Storescp,
    copy_with_new_uids,
    wait_for,
)

DX_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # the NIH file is a secondary capture


def _send_counting_acks(files: list[Path], port: int, acked: list[str],
                        after_ack: int, on_count: threading.Event) -> None:
    """C-STORE each file; record the UIDs answered Success; set ``on_count`` after
    ``after_ack`` acknowledgements (the test then kills the node)."""
    ae = AE(ae_title=PACS_AE)
    ae.add_requested_context(DX_CLASS, pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    assert assoc.is_established
    for path in files:
        if not assoc.is_established:
            break
        status = assoc.send_c_store(path)
        if status and status.get("Status") == 0x0000:
            acked.append(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
            if len(acked) == after_ack:
                on_count.set()
    if assoc.is_established:
        assoc.abort()


def _expect_exactly_once(node: NodeProcess, destination: Storescp, sources: set[str]) -> None:
    results = {uid for uid, source in node.query("SELECT sop_uid, source_sop_uid FROM results")
               if source in sources}
    assert len(results) == 2 * len(sources)  # SEG + SR each
    counts = wait_for(lambda: (c := destination.received()) and results <= set(c) and c,
                      60, "every result at the destination")
    assert all(counts[uid] == 1 for uid in results), {u: counts[u] for u in results}


def test_kill_during_ingest_then_during_processing(tmp_path: Path, processes: list) -> None:
    destination = Storescp(tmp_path / "received").start()
    processes.append(destination)
    node = NodeProcess(tmp_path, destinations=[("dest", DEST_AE, destination.port)],
                       quiet_period=0.5)
    processes.append(node)
    node.start()

    # 1. kill -9 while a stream of instances is arriving
    study = generate_uid()
    files = [copy_with_new_uids(DX_NIH, tmp_path / "a", study_uid=study) for _ in range(10)]
    acked: list[str] = []
    third = threading.Event()
    sender = threading.Thread(target=_send_counting_acks,
                              args=(files, node.port, acked, 3, third))
    sender.start()
    assert third.wait(60), "the node never acknowledged three instances"
    node.kill9()
    sender.join(60)
    assert 3 <= len(acked) < len(files), acked
    node.start()
    states = node.wait_instances(set(acked), {"processed", "refused", "failed"}, timeout=120)
    assert all(states[uid][0] == "processed" for uid in acked), states
    _expect_exactly_once(node, destination, set(acked))

    # 2. kill -9 while a study is being analysed
    study = generate_uid()
    files = [copy_with_new_uids(DX_NIH, tmp_path / "b", study_uid=study) for _ in range(4)]
    acked_b: list[str] = []
    _send_counting_acks(files, node.port, acked_b, 0, threading.Event())
    assert len(acked_b) == 4

    def half_done() -> bool:
        rows = node.query("SELECT COUNT(*) FROM instances i JOIN studies s ON "
                          "s.id = i.study_id WHERE s.study_uid = ? AND i.state = 'processed'",
                          (study,))
        return 1 <= rows[0][0] < 4
    wait_for(half_done, 60, "the study to be partly processed", interval=0.05)
    node.kill9()
    assert node.query("SELECT state FROM studies WHERE study_uid = ?", (study,))[0][0] == (
        "processing")
    node.start()
    node.wait_instances(set(acked_b), {"processed"}, timeout=120)
    _expect_exactly_once(node, destination, set(acked_b))
    assert node.stop() == 0
