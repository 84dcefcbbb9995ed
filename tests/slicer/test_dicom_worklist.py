"""The worklist over Slicer's DICOM database, on real MRML and a real database file.

The shared DICOM samples are analysed by the shipped models; their radiographs, SEGs and
SRs go into a database laid out as ctkDICOMDatabase lays it out (``ctk_database``:
copied files by relative path, linked ones by absolute path). The worklist must list the
radiographs our SRs report on, the least trusted masks first, open each with its SEG's
masks bit for bit, say which radiographs are not analysed or miss a SEG, and take in
radiographs analysed in the background once their results are imported.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from SlicerCXRLib.dicom_worklist import INCOMPLETE, NOT_ANALYZED, DatabaseWorklist
from SlicerCXRLib.export import segmentation_masks

from cxr_core import read_radiograph, write_outputs
from tests.conftest import DICOM_SAMPLES
from tests.slicer.ctk_database import create_database, insert

SIIM = next(DICOM_SAMPLES.glob("siim_*.dcm"))
NIH = next(DICOM_SAMPLES.glob("nih_gcp_*.dcm"))
RG1_J2KI = DICOM_SAMPLES / "RG1_J2KI.dcm"
RG1_UNCR = DICOM_SAMPLES / "RG1_UNCR.dcm"


@pytest.fixture(scope="module")
def analysed(engine, tmp_path_factory):
    """Each sample's analysis and its written results (seg.dcm, sr.dcm)."""
    out = tmp_path_factory.mktemp("results")
    results = {}
    for path in (SIIM, NIH, RG1_J2KI):
        analysis = engine.analyze(read_radiograph(path))
        results[path] = (analysis, write_outputs(analysis, out).files)
    return results


@pytest.fixture
def database(analysed, tmp_path):
    """SIIM copied in with its results; NIH linked, its results copied; RG1_J2KI linked
    with its SR but not its SEG; RG1_UNCR linked, never analysed."""
    db = create_database(tmp_path / "SlicerDICOMDatabase")
    for path, copy in ((SIIM, True), (NIH, False)):
        insert(db, path, copy=copy)
        insert(db, analysed[path][1]["seg"], copy=True)
        insert(db, analysed[path][1]["sr"], copy=True)
    insert(db, RG1_J2KI, copy=False)
    insert(db, analysed[RG1_J2KI][1]["sr"], copy=True)
    insert(db, RG1_UNCR, copy=False)
    return db


def test_database_cases_worst_first_opened_with_their_seg(logic, database, analysed, tmp_path):
    worklist = logic.open_database_worklist(database.parent)
    expected = sorted((SIIM, NIH), key=lambda p: analysed[p][0].review_score)
    assert len(worklist) == 2
    assert [row.review_score for row in worklist.cases] == [
        analysed[p][0].review_score for p in expected]
    assert Path(worklist.cases[1].input).resolve() == expected[1].resolve()  # linked
    assert {(Path(r.input).name, r.status) for r in worklist.not_analyzed} == {
        (RG1_J2KI.name, INCOMPLETE), (RG1_UNCR.name, NOT_ANALYZED)}
    assert "SEG is not in the database" in next(
        r.note for r in worklist.not_analyzed if r.status == INCOMPLETE)
    assert worklist.unanalysed_files() == [RG1_UNCR.resolve()]

    for path in expected:
        case = logic.next_case(worklist)
        analysis = analysed[path][0]
        assert case.volume.GetAttribute("DICOM.instanceUIDs") == str(
            analysis.radiograph.source_dataset.SOPInstanceUID)
        masks, _ = segmentation_masks(case.segmentation, case.volume)
        for name in ("right_lung", "left_lung", "heart"):  # the SEG's masks, bit for bit
            assert np.array_equal(masks[name], analysis.segments[name].mask), name
        rows = {case.table.GetCellText(r, 1): case.table.GetCellText(r, 2)
                for r in range(case.table.GetNumberOfRows())}
        agreement = rows["Left lung: Segmentation mask agreement estimate"]
        assert float(agreement) == pytest.approx(analysis.segments["left_lung"].quality)
        assert {m.id for m in analysis.models} <= set(case.models)
        assert any(name.startswith("lung_seg@") for name in rows)
    assert logic.next_case(worklist) is None
    # the masks opened are the model's: exporting them unchanged records no edit
    entry = logic.export(case.segmentation, case.volume, tmp_path / "store", user="tester").entry
    assert entry.edited == {}


def test_unanalysed_radiographs_analysed_in_background_join_the_worklist(logic, database,
                                                                       tmp_path):
    files = DatabaseWorklist(database).unanalysed_files()
    process = logic.analyze_in_background(files, tmp_path / "run")
    deadline = time.monotonic() + 600
    while process.running and time.monotonic() < deadline:
        process.poll()
        time.sleep(0.2)
    assert process.wait(30) == 0, process.progress.lines[-5:]
    for result in sorted((tmp_path / "run").glob("*/s[er]*.dcm")):  # as the browser imports
        insert(database, result, copy=True)
    worklist = logic.open_database_worklist(database)
    assert len(worklist) == 3 and worklist.unanalysed_files() == []
    assert RG1_UNCR.resolve() in {Path(row.input) for row in worklist.cases}
    scores = [row.review_score for row in worklist.cases]
    assert scores == sorted(scores)


def test_refusals_name_the_problem(logic, tmp_path):
    with pytest.raises(ValueError, match="no ctkDICOM.sql"):
        logic.open_database_worklist(tmp_path)
    (tmp_path / "ctkDICOM.sql").write_bytes(b"not a database at all, just text" * 40)
    with pytest.raises(ValueError, match="not a DICOM database"):
        logic.open_database_worklist(tmp_path)
