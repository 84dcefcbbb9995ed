"""What a real Orthanc (the installed 1.10.1) does with a second C-STORE of a SOP
Instance UID it holds, identical or not: the question behind a resent delivery.

* ``OverwriteInstances: false`` (its default): Success, the first stays ("Already
  stored").
* ``OverwriteInstances: true``: Success, the second replaces the first.
* a Lua ``ReceivedCStoreInstanceFilter`` that raises for a UID it holds (how an Orthanc
  is made to reject duplicates; a returned 0 discards with Success in this version):
  0xA700, the first stays.

A node resend (same UID, same bytes) leaves one instance in all three; only the last
answers it with a failure, which the node's ``in_doubt = "c-find"`` avoids by asking
first (test_in_doubt.py, benchmarks/node_kill9.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE

from tests.node.node_helpers import DX_NIH, Orthanc, copy_with_new_uids, free_port

REJECT_KNOWN_UIDS = """
function ReceivedCStoreInstanceFilter(dicom, origin, info)
  local held = ParseJson(RestApiPost('/tools/lookup', dicom.SOPInstanceUID))
  if #held > 0 then
    error('SOP Instance UID already stored')
  end
  return 1
end
"""
MODES = {
    "keep": ({}, "", [0x0000, 0x0000, 0x0000], "first"),
    "overwrite": ({"OverwriteInstances": True}, "", [0x0000, 0x0000, 0x0000], "second"),
    "reject": ({}, REJECT_KNOWN_UIDS, [0x0000, 0xA700, 0xA700], "first"),
}


def _store(path: Path, port: int) -> int:
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title="CXRNODE")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


@pytest.mark.parametrize("mode", sorted(MODES))
def test_second_store_of_a_held_uid(mode: str, tmp_path: Path, processes: list) -> None:
    settings, lua, statuses, kept = MODES[mode]
    orthanc = Orthanc(tmp_path / "orthanc", node_port=free_port(), route=False, lua=lua,
                      settings=settings)
    processes.append(orthanc)
    orthanc.start()
    first = copy_with_new_uids(DX_NIH, tmp_path / "in", SeriesDescription="first")
    dataset = pydicom.dcmread(first)
    dataset.SeriesDescription = "second"  # same UIDs, other content
    second = tmp_path / "second.dcm"
    dataset.save_as(second, enforce_file_format=True)

    # the original, an identical resend, then other content under the same UID
    assert [_store(path, orthanc.dicom_port) for path in (first, first, second)] == statuses
    [instance] = orthanc.get("/instances")
    tags = json.loads(orthanc._request(f"/instances/{instance}/simplified-tags"))
    assert tags["SOPInstanceUID"] == dataset.SOPInstanceUID
    assert tags["SeriesDescription"] == kept
