"""A re-used SOP Instance UID never overwrites an accepted instance (issue 14 item 5, red
team F8): an identical resend is Success and changes nothing; other pixels in the same
study, or the UID in another study, are refused with 0xC0D1 (``reused_uids = "refuse"``,
the default) or stored and analysed as a new version (``"version"``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from tests.node.node_helpers import DX_NIH, NodeProcess, copy_with_new_uids, send_raw

DUPLICATE_UID = 0xC0D1


def _variants(folder: Path) -> dict[str, Path]:
    """The original, a byte-identical resend, the same UID with blank pixels in the same
    study, and the same UID (original pixels) in another study."""
    original = copy_with_new_uids(DX_NIH, folder / "original")
    dataset = pydicom.dcmread(original)
    blank = folder / "blank.dcm"
    pixels = np.zeros_like(dataset.pixel_array)
    pixels[::7, ::5] = 200  # other content, still a readable image
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(blank, enforce_file_format=True)
    other = pydicom.dcmread(original)
    other.StudyInstanceUID = generate_uid()
    other_study = folder / "other_study.dcm"
    other.save_as(other_study, enforce_file_format=True)
    return {"original": original, "resend": original, "changed_pixels": blank,
            "other_study": other_study}


def test_reused_uid_is_refused_and_nothing_overwritten(tmp_path: Path, processes: list
                                                       ) -> None:
    node = NodeProcess(tmp_path / "node", destinations=[], quiet_period=60)
    processes.append(node)
    node.start()
    cases = _variants(tmp_path / "in")
    answers = {name: send_raw(path, node.port) for name, path in cases.items()}
    assert answers["original"] == answers["resend"] == (0x0000, "")
    assert answers["changed_pixels"] == (
        DUPLICATE_UID, "SOP Instance UID already accepted with other content")
    assert answers["other_study"] == (
        DUPLICATE_UID, "SOP Instance UID already accepted in another study")
    spooled = list((node.storage / "spool").rglob("*.dcm"))
    assert len(spooled) == 1 and spooled[0].read_bytes().endswith(
        pydicom.dcmread(cases["original"]).PixelData[-4096:])
    assert node.query("SELECT COUNT(*) FROM instances") == [(1,)]
    assert node.stop() == 0


def test_reused_uid_as_new_versions_each_analysed(tmp_path: Path, processes: list) -> None:
    node = NodeProcess(tmp_path / "node", destinations=[], quiet_period=0.5)
    node.config_path.write_text(node.config_path.read_text().replace(
        "[node]\n", '[node]\nreused_uids = "version"\n'))
    processes.append(node)
    node.start()
    cases = _variants(tmp_path / "in")
    for name, path in cases.items():
        assert send_raw(path, node.port) == (0x0000, ""), name
    uid = str(pydicom.dcmread(cases["original"], stop_before_pixels=True).SOPInstanceUID)
    keys = {uid, f"{uid}~2", f"{uid}~3"}
    states = node.wait_instances(keys, {"processed", "ignored", "refused", "failed"},
                                 timeout=180)
    # each version had its own analysis: the blank-pixel one is not a chest image to the
    # engine's gate; the copy in the other study is analysed like the original
    assert states[f"{uid}~2"][0] == "ignored", states
    assert states[uid][0] == states[f"{uid}~3"][0] == "processed", states
    assert node.query("SELECT COUNT(*) FROM instances") == [(3,)]  # the resend added none
    results = node.query("SELECT source_sop_uid, sop_uid FROM results")
    assert {source for source, _ in results} == {uid, f"{uid}~3"}
    assert len({result for _, result in results}) == len(results)  # each its own UIDs
    originals = [p for p in (node.storage / "spool").rglob(f"{uid}.dcm")]
    assert len(originals) == 1 and originals[0].read_bytes().endswith(
        pydicom.dcmread(cases["original"]).PixelData[-4096:])
    assert node.stop() == 0
