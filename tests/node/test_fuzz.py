"""The fuzz suite (issue 14 item 9): >= 100 generated malformed and hostile inputs, each
sent byte-exact to one live node; each ends in a fate its case allows (never ``failed``,
never silence), C-STORE failures carry a reason, and the node answers C-ECHO after every
case and analyses a valid image at the end."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pynetdicom import AE
from pynetdicom.dsutils import split_dataset

from tests.node.node_fuzz import build_fuzz
from tests.node.node_helpers import (
    DX_NIH,
    NODE_AE,
    PACS_AE,
    NodeProcess,
    copy_with_new_uids,
    send_raw,
)
from tests.node.node_malformed import PATIENT_MARKER


def _echo(port: int) -> bool:
    ae = AE(ae_title=PACS_AE)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and int(status.Status) == 0


def test_fuzz_corpus(tmp_path: Path, processes: list, chunked_sending: None) -> None:
    cases = build_fuzz(tmp_path / "corpus")
    assert len(cases) >= 100
    node = NodeProcess(tmp_path / "node", destinations=[], quiet_period=0.5)
    processes.append(node)
    node.start()
    acked: dict[str, str] = {}
    fates: dict[str, tuple[str, str]] = {}
    for case in cases:
        code, comment = send_raw(case.path, node.port)
        if code == 0x0000:
            acked[case.name] = str(split_dataset(case.path)[0].MediaStorageSOPInstanceUID)
        else:
            fates[case.name] = ("store", f"0x{code:04X} {comment}" if code else comment)
            assert comment, f"{case.name}: C-STORE failure 0x{code:04X} without a reason"
        assert _echo(node.port), f"no C-ECHO after {case.name}"
    good = copy_with_new_uids(DX_NIH, tmp_path / "good")
    good_uid = str(pydicom.dcmread(good, stop_before_pixels=True).SOPInstanceUID)
    assert send_raw(good, node.port)[0] == 0x0000
    states = node.wait_instances({*acked.values(), good_uid},
                                 {"processed", "ignored", "refused", "failed"}, timeout=600)
    assert states[good_uid][0] == "processed"
    fates.update({name: states[uid] for name, uid in acked.items()})
    counts: dict[str, int] = {}
    for fate, _ in fates.values():
        counts[fate] = counts.get(fate, 0) + 1
    print(f"{len(cases)} cases: {counts}")
    wrong = {c.name: fates[c.name] for c in cases if fates[c.name][0] not in c.fates}
    assert not wrong, wrong
    assert PATIENT_MARKER not in node.log()
    assert all(line.startswith("{") for line in node.log().splitlines())
    assert node.stop() == 0
