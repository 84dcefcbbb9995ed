"""Orthanc as the PACS: a stable study is auto-routed to the node, SEG and SR come back
into the same study referencing the source, and the node never re-processes them when
Orthanc routes the study (now with SEG and SR in it) again."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom

from tests.node.node_helpers import (
    DX_NIH,
    NodeProcess,
    Orthanc,
    copy_with_new_uids,
    free_port,
    wait_for,
)

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


def _study_instances(orthanc: Orthanc, study_uid: str) -> list[pydicom.Dataset]:
    studies = [s for s in orthanc.get("/studies?expand")
               if s["MainDicomTags"]["StudyInstanceUID"] == study_uid]
    if not studies:
        return []
    return [pydicom.dcmread(io.BytesIO(orthanc.file(i["ID"])), stop_before_pixels=True)
            for i in orthanc.get(f"/studies/{studies[0]['ID']}/instances")]


def test_orthanc_routes_study_and_receives_seg_and_sr(tmp_path: Path,
                                                      processes: list) -> None:
    orthanc = Orthanc(tmp_path / "orthanc", node_port=free_port())
    processes.append(orthanc)
    node = NodeProcess(tmp_path / "node", allowed=("ORTHANC",), port=orthanc.node_port,
                       destinations=[("pacs", "ORTHANC", orthanc.dicom_port)])
    processes.append(node)
    node.start()
    orthanc.start()

    image = copy_with_new_uids(DX_NIH, tmp_path / "in")
    source = pydicom.dcmread(image, stop_before_pixels=True)
    orthanc.upload(image)

    def results_back() -> list[pydicom.Dataset] | None:
        found = _study_instances(orthanc, str(source.StudyInstanceUID))
        classes = sorted(str(d.SOPClassUID) for d in found)
        return found if SEG_CLASS in classes and SR_CLASS in classes else None
    instances = wait_for(results_back, 120, "SEG and SR stored in Orthanc", interval=0.5)
    seg = next(d for d in instances if d.SOPClassUID == SEG_CLASS)
    sr = next(d for d in instances if d.SOPClassUID == SR_CLASS)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert (seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
            .ReferencedSOPInstanceUID == source.SOPInstanceUID)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert any(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
               for item in evidence)

    # Orthanc routes the study again once SEG and SR made it unstable and stable again:
    # the node takes them, ignores them as its own output, and sends nothing new.
    seg_uid, sr_uid = str(seg.SOPInstanceUID), str(sr.SOPInstanceUID)
    states = node.wait_instances({seg_uid, sr_uid}, {"ignored", "processed"}, timeout=60)
    assert states[seg_uid] == ("ignored", "made by SlicerCXR (the node's own output)")
    assert states[sr_uid][0] == "ignored"
    assert node.query("SELECT COUNT(*) FROM results")[0][0] == 2
    assert node.query("SELECT COUNT(*), MIN(state) FROM deliveries")[0] == (2, "sent")
    final = _study_instances(orthanc, str(source.StudyInstanceUID))
    assert sorted(str(d.SOPClassUID) for d in final).count(SEG_CLASS) == 1
    assert len(final) == 3
    assert node.stop() == 0
