"""At least 20 broken or hostile inputs: each is refused at C-STORE (with a reason in
ErrorComment) or stored and then refused/ignored with a reason (refused files go to
quarantine); none is analysed, and the node keeps serving."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pynetdicom.dsutils import split_dataset

from tests.node.node_helpers import (
    DEST_AE,
    DX_NIH,
    NodeProcess,
    Storescp,
    copy_with_new_uids,
    echoscu,
    send_raw,
    storescu,
)
from tests.node.node_malformed import PATIENT_MARKER, build_malformed


def test_malformed_inputs_are_refused_with_reasons(tmp_path: Path, processes: list,
                                                   chunked_sending: None) -> None:
    destination = Storescp(tmp_path / "received").start()
    processes.append(destination)
    node = NodeProcess(tmp_path, destinations=[("dest", DEST_AE, destination.port)])
    processes.append(node)
    node.start()
    cases = build_malformed(tmp_path / "malformed")
    assert len(cases) >= 20
    at_store: dict[str, str] = {}
    stored: dict[str, str] = {}
    for name, path in cases.items():
        code, comment = send_raw(path, node.port)
        if code == 0x0000:
            stored[name] = str(split_dataset(path)[0].MediaStorageSOPInstanceUID)
        else:
            assert code is None or comment, f"{name}: failure 0x{code:04X} without a reason"
            at_store[name] = comment or "not sent"
    # a storage fault (the study's spool folder cannot be created): refused, not acked
    blocked = copy_with_new_uids(DX_NIH, tmp_path / "blocked")
    study = str(pydicom.dcmread(blocked, stop_before_pixels=True).StudyInstanceUID)
    (node.storage / "spool" / study).write_text("in the way")
    code, comment = send_raw(blocked, node.port)
    assert code == 0xA700 and "could not store" in comment
    assert not list((node.storage / "incoming").iterdir())  # no half-written leftovers
    # the node still serves: echo, and a valid image is analysed
    assert echoscu(node.port).returncode == 0
    good = copy_with_new_uids(DX_NIH, tmp_path / "good")
    assert storescu([good], node.port).returncode == 0
    good_uid = str(pydicom.dcmread(good, stop_before_pixels=True).SOPInstanceUID)
    states = node.wait_instances({*stored.values(), good_uid},
                                 {"processed", "ignored", "refused", "failed"}, timeout=120)
    assert states[good_uid][0] == "processed"
    outcomes = {name: states[uid] for name, uid in stored.items()}
    report = "\n".join(f"{n}: C-STORE refused: {c}" for n, c in at_store.items()) + "\n" + \
        "\n".join(f"{n}: {s}: {r}" for n, (s, r) in outcomes.items())
    print(report)
    for name, (state, reason) in outcomes.items():
        assert state in {"refused", "ignored"} and reason, f"{name}: {state} ({reason})"
        if state == "refused":
            quarantined = list((node.storage / "quarantine").rglob(f"{stored[name]}.dcm"))
            assert quarantined, f"{name}: refused but not in quarantine"
    # hostile UIDs never became paths; nothing was written outside the storage folder
    assert not Path("/tmp/evil").exists()
    for path in node.storage.rglob("*"):
        assert node.storage in path.resolve().parents
    assert {"path_like_study_uid", "long_study_uid", "missing_study_uid"} <= set(at_store)
    code, metrics = node.http("/metrics")
    assert 'cxr_node_instances_rejected_total{reason="invalid"}' in metrics
    assert PATIENT_MARKER not in node.log()  # not even inside quoted library warnings
    assert node.stop() == 0
