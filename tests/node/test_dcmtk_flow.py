"""storescu -> node -> storescp, with real dcmtk processes on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from tests.node.node_helpers import (
    CR_J2K_LOSSY,
    CR_UNCOMPRESSED,
    DEST_AE,
    DX_NIH,
    EXTREMITY,
    SC_JPEG,
    NodeProcess,
    Storescp,
    copy_with_new_uids,
    dciodvfy_errors,
    echoscu,
    storescu,
    wait_for,
)

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("flow")
    destination = Storescp(root / "received").start()
    node = NodeProcess(root, destinations=[("dest", DEST_AE, destination.port)],
                       heatmap_seg=True)
    text = node.config_path.read_text().replace("[security]", "overlay = true\n[security]")
    node.config_path.write_text(text)
    try:
        node.start()
        inputs = root / "inputs"
        chest = {
            "cr": copy_with_new_uids(CR_UNCOMPRESSED, inputs),
            "dx": copy_with_new_uids(DX_NIH, inputs),
            "sc_jpeg": copy_with_new_uids(SC_JPEG, inputs),
            "cr_j2k": copy_with_new_uids(CR_J2K_LOSSY, inputs),
        }
        extremity = copy_with_new_uids(EXTREMITY, inputs)
        # the same lower-leg CR with its body part blanked: only its pixels say what it is
        unlabelled = copy_with_new_uids(EXTREMITY, inputs, BodyPartExamined="")
        sent = [storescu([chest["cr"], chest["dx"]], node.port),
                storescu([chest["sc_jpeg"]], node.port, transfer="-xy"),
                storescu([chest["cr_j2k"]], node.port, transfer="-xw"),
                storescu([extremity, unlabelled], node.port, transfer="-xv")]
        for result in sent:
            assert result.returncode == 0, result.stderr
        yield node, destination, chest, (extremity, unlabelled)
    finally:
        code = node.stop()
        destination.stop()
    assert code == 0, f"node did not stop gracefully on SIGTERM:\n{node.log()}"


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _results_for(folder: Path, source_uid: str) -> dict[tuple[str, int], Path]:
    """The node's results that reference ``source_uid``, by (SOP class, series number):
    the lung SEG (901) and the heat-map SEG (904) share a SOP class."""
    found = {}
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        if source_uid in str(dataset.to_json_dict()):
            found[(str(dataset.SOPClassUID), int(dataset.SeriesNumber))] = path
    return found


def test_each_chest_image_gets_seg_sr_and_overlay_exactly_once(flow) -> None:
    node, destination, chest, _ = flow
    uids = {_uid(p) for p in chest.values()}
    states = node.wait_instances(uids, {"processed", "refused", "failed"})
    assert {states[u][0] for u in uids} == {"processed"}, states
    # SEG, SR and overlay SC per image, and the heat-map SEG when a finding is positive
    kinds: dict[str, list[str]] = {}
    for source_uid, kind in node.query("SELECT source_sop_uid, kind FROM results"):
        kinds.setdefault(source_uid, []).append(kind)
    for uid in uids:
        assert sorted(kinds[uid]) in (["overlay", "seg", "sr"],
                                      ["heatmap_seg", "overlay", "seg", "sr"]), kinds[uid]
    expected = sum(len(kinds[uid]) for uid in uids)
    wait_for(lambda: sum(destination.received().values()) >= expected, 60, "results")
    counts = destination.received()
    assert len(counts) == expected and set(counts.values()) == {1}, counts
    for source in chest.values():
        results = _results_for(destination.folder, _uid(source))
        assert {sop_class for sop_class, _ in results} == {SEG_CLASS, SR_CLASS, SC_CLASS}, (
            source.name, results)
        assert len(results) == len(kinds[_uid(source)])
    sent = node.query("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'")[0][0]
    assert sent == expected  # the store agrees with the destination


def test_results_are_valid_dicom_referencing_the_source(flow) -> None:
    node, destination, chest, _ = flow
    source = pydicom.dcmread(chest["cr"], stop_before_pixels=True)
    results = _results_for(destination.folder, str(source.SOPInstanceUID))
    for path in results.values():
        assert dciodvfy_errors(path) == [], path
    seg = pydicom.dcmread(results[(SEG_CLASS, 901)], stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.Manufacturer == "SlicerCXR" and seg.SeriesNumber == 901


def test_extremity_is_not_analysed_and_says_why(flow) -> None:
    node, destination, _, (extremity, unlabelled) = flow
    uids = {_uid(extremity), _uid(unlabelled)}
    states = node.wait_instances(uids, {"ignored", "refused", "processed", "failed"})
    assert states[_uid(extremity)][0] == "ignored"
    assert states[_uid(extremity)][1] == "body part not chest"  # a code, not the value
    # no header says so, the chest gate does: stored, ignored, reason recorded
    assert states[_uid(unlabelled)][0] == "ignored"
    assert "not a frontal chest radiograph" in states[_uid(unlabelled)][1]
    for uid in uids:
        assert _results_for(destination.folder, uid) == {}


def test_unknown_calling_ae_is_rejected_known_one_accepted(flow) -> None:
    node = flow[0]
    assert echoscu(node.port).returncode == 0
    rejected = echoscu(node.port, calling_ae="INTRUDER")
    assert rejected.returncode != 0
    assert "Calling AE Title Not Recognized" in rejected.stderr + rejected.stdout
    assert '"reason": "calling AE title not allowed"' in node.log()


def test_status_health_and_metrics(flow) -> None:
    node, _, chest, _ = flow
    node.wait_instances({_uid(p) for p in chest.values()}, {"processed"})
    status = node.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["counts"]["instances"]["processed"] == 4
    assert any("EXTREMITY" in (row["detail"] or "") for row in report["failures"]) or (
        report["counts"]["instances"].get("ignored") == 2)  # both extremity CRs
    text = node.cli("status").stdout
    assert "studies:" in text and "failures" in text
    code, body = node.http("/healthz")
    assert code == 200 and json.loads(body)["engine"] == "ready"
    assert any(model.startswith("lung_seg@") for model in json.loads(body)["models"])
    code, metrics = node.http("/metrics")
    assert code == 200
    assert "cxr_node_instances_received_total 6.0" in metrics  # 4 chests, 2 extremities
    assert "cxr_node_instances_processed_total 4.0" in metrics
    assert 'cxr_node_results_sent_total{destination="dest"}' in metrics
    assert "cxr_node_study_latency_seconds_count" in metrics
    assert "cxr_node_queue_depth 0.0" in metrics


def test_files_stay_in_storage_named_by_uid_and_logs_hold_no_patient_data(flow) -> None:
    node, _, chest, _ = flow
    node.wait_instances({_uid(p) for p in chest.values()}, {"processed"})
    for path in (node.storage / "spool").rglob("*.dcm"):
        assert path.parent.parent == node.storage / "spool"
        assert all(c.isdigit() or c == "." for c in path.stem + path.parent.name)
    log = node.log()
    for source in chest.values():
        dataset = pydicom.dcmread(source, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID"):
            value = str(dataset.get(keyword, "") or "")
            if len(value) > 3:
                assert value not in log, f"{keyword} appears in the node's log"
