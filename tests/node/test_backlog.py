"""A backlog through the node: studies queued at once are analysed one instance ahead of
the writing (dicom_node.lookahead), and what reaches the destination is what analysing
each instance alone gives."""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_node.lookahead import Lookahead
from dicom_node.store import Instance
from tests.node.node_helpers import (
    CR_J2K_LOSSY,
    CR_UNCOMPRESSED,
    DEST_AE,
    DX_NIH,
    EXTREMITY,
    NodeProcess,
    Storescp,
    copy_with_new_uids,
    storescu,
    wait_for,
)


@pytest.fixture(scope="module")
def backlog(tmp_path_factory: pytest.TempPathFactory):
    """Six instances in five studies (one of two instances, one not a chest), sent in one
    association: they are all queued while the worker analyses the first."""
    root = tmp_path_factory.mktemp("backlog")
    destination = Storescp(root / "received").start()
    node = NodeProcess(root, destinations=[("dest", DEST_AE, destination.port)],
                       heatmap_seg=True)
    inputs, shared_study = root / "inputs", generate_uid()
    sources = [copy_with_new_uids(CR_UNCOMPRESSED, inputs),
               copy_with_new_uids(DX_NIH, inputs),
               copy_with_new_uids(EXTREMITY, inputs),
               copy_with_new_uids(CR_J2K_LOSSY, inputs, study_uid=shared_study),
               copy_with_new_uids(DX_NIH, inputs, study_uid=shared_study),
               copy_with_new_uids(CR_UNCOMPRESSED, inputs)]
    try:
        node.start(timeout=120)
        # dcmtk proposes one compressed syntax per association: the JPEG 2000 files apart
        for files, transfer in (([sources[i] for i in (0, 1, 4, 5)], None),
                                ([sources[2]], "-xv"), ([sources[3]], "-xw")):
            sent = storescu(files, node.port, transfer=transfer)
            assert sent.returncode == 0, sent.stderr
        wait_for(lambda: {s for _, (s, _r) in node.instance_states().items()} <= {
            "processed", "ignored", "refused", "failed"} and len(node.instance_states()) == 6,
            300, "every instance processed")
        wait_for(lambda: node.query("SELECT COUNT(*) FROM deliveries WHERE state != 'sent'"
                                    )[0][0] == 0, 120, "every result delivered")
        yield node, destination, sources
    finally:
        code = node.stop()
        destination.stop()
    assert code == 0, f"node did not stop gracefully:\n{node.log()}"


def _alone(received: list[Path]) -> dict[str, dict[str, pydicom.Dataset] | None]:
    """Each instance the node received (its spooled copy: storescu drops trailing
    padding, which the source digest sees) analysed on its own in this process: its
    result datasets by kind, or None when the engine refuses it (the node then ignores
    it, by its filters or the engine)."""
    from cxr_core import (
        DicomOptions,
        Engine,
        RefusedInput,
        build_dicom_results,
        read_radiograph,
    )

    engine = Engine()
    results: dict[str, dict[str, pydicom.Dataset] | None] = {}
    for path in received:
        try:
            radiograph = read_radiograph(path, radiograph_id=path.stem)
            analysis = engine.analyze(radiograph)
        except RefusedInput:
            results[path.stem] = None
            continue
        assert radiograph.source_dataset is not None
        results[path.stem] = dict(build_dicom_results(
            radiograph.source_dataset, analysis, DicomOptions(heatmaps=True)).items())
    return results


def test_a_backlog_gives_the_results_of_one_at_a_time_analysis(backlog) -> None:
    node, destination, sources = backlog
    states = node.instance_states()
    spooled = [Path(path) for (path,) in node.query("SELECT path FROM instances")]
    alone = _alone(spooled)
    received = {str(ds.SOPInstanceUID): ds for ds in
                (pydicom.dcmread(p) for p in destination.folder.iterdir())}
    assert set(destination.received().values()) == {1}  # each result delivered once
    expected_uids = set()
    for path in sources:
        expected = alone[path.stem]
        if expected is None:
            assert states[path.stem][0] == "ignored", states[path.stem]
            continue
        assert states[path.stem][0] == "processed", states[path.stem]
        kinds = {kind for (uid, kind) in node.query(
            "SELECT sop_uid, kind FROM results WHERE source_sop_uid = ?", (path.stem,))}
        assert kinds == set(expected), (path.name, kinds)
        for kind, dataset in expected.items():
            # result UIDs hash the source and what the analysis says (masks, findings,
            # measurements): the same UID is the same analysis
            uid = str(dataset.SOPInstanceUID)
            expected_uids.add(uid)
            assert uid in received, (path.name, kind)
            if kind in ("seg", "heatmap_seg"):
                assert received[uid].PixelData == dataset.PixelData, (path.name, kind)
    assert set(received) == expected_uids  # nothing else was sent
    assert any(kind == "heatmap_seg" for (kind,) in node.query("SELECT kind FROM results"))


def _instance(name: str) -> Instance:
    return Instance(sop_uid=name, study_id=1, sop_class="1.2", path=Path(f"/x/{name}"))


def test_lookahead_analyses_the_next_instance_in_its_own_thread() -> None:
    calls: list[tuple[str, str]] = []
    release = threading.Event()

    def analyze(instance: Instance, study_uid: str) -> str:
        calls.append((instance.sop_uid, threading.current_thread().name))
        if instance.sop_uid == "slow":
            release.wait(10)
        if instance.sop_uid == "bad":
            raise ValueError("unreadable")
        return f"{instance.sop_uid}@{study_uid}"

    started: list[str] = []
    lookahead: Lookahead[str] = Lookahead(analyze, name="ahead", on_start=lambda: started.append(
        threading.current_thread().name))
    try:
        assert lookahead.result(_instance("a"), "s1") == "a@s1"
        lookahead.ahead(_instance("b"), "s2")
        wait_for(lambda: len(calls) == 2, 10, "b analysed ahead")
        assert lookahead.result(_instance("b"), "s2") == "b@s2"
        assert [c[0] for c in calls] == ["a", "b"]  # b was not analysed twice
        assert {name for _, name in calls} == set(started) and started[0].startswith("ahead")
        # made ahead for another instance: dropped, the asked one is analysed
        lookahead.ahead(_instance("slow"), "s3")
        release.set()
        assert lookahead.result(_instance("c"), "s3") == "c@s3"
        with pytest.raises(ValueError, match="unreadable"):
            lookahead.result(_instance("bad"), "s4")
    finally:
        lookahead.close()
