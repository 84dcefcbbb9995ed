"""Values the result objects copy from the source (patient, study, PatientOrientation,
BodyPartExamined) that their VR or enumeration does not allow: a real CR with free text
in PatientSex (CS), a lower-case BodyPartExamined, dates and a time that are none, an
AccessionNumber over SH's 16 characters and a lower-case PatientOrientation. The SEG,
SR, heat-map SEG and overlay SC are still written and dciodvfy finds no error in them:
such values are emptied (Type 2) or left out (Type 3), code strings upper-cased. The
caller's header is left as it was."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.filewriter import dcmwrite

from cxr_core import DicomOptions, build_dicom_results, read_radiograph
from tests.conftest import DICOM_SAMPLES, dciodvfy_errors

HOSTILE = {
    "PatientSex": "female; see note",   # CS, enumerated M/F/O
    "BodyPartExamined": "chest",        # CS: upper case only
    "StudyDate": "yesterday",           # DA
    "StudyTime": "noon",                # TM
    "PatientBirthDate": "19xx",         # DA
    "AccessionNumber": "A" * 40,        # SH: at most 16
    "PatientOrientation": ["left", "up"],  # CS, directions A/P/R/L/H/F
}


def test_invalid_copied_values_are_not_copied(engine, tmp_path: Path) -> None:
    dataset = pydicom.dcmread(DICOM_SAMPLES / "RG1_UNCR.dcm")
    for keyword, value in HOSTILE.items():
        setattr(dataset, keyword, value)
    path = tmp_path / "hostile.dcm"
    dataset.save_as(path, enforce_file_format=True)
    analysis = engine.analyze(read_radiograph(path))
    source = analysis.radiograph.source_dataset
    results = build_dicom_results(source, analysis, DicomOptions(overlay=True))
    assert source.PatientSex == HOSTILE["PatientSex"]  # the caller's header unchanged
    written = {}
    for kind, result in results.items():
        written[kind] = tmp_path / f"{kind}.dcm"
        dcmwrite(written[kind], result, enforce_file_format=True)
        assert dciodvfy_errors(written[kind]) == [], kind
    seg = pydicom.dcmread(written["seg"])
    assert seg.BodyPartExamined == "CHEST"
    for keyword in ("PatientSex", "StudyDate", "StudyTime", "PatientBirthDate",
                    "AccessionNumber", "PatientOrientation"):
        assert keyword in seg and not seg[keyword].value, keyword
    sr = pydicom.dcmread(written["sr"])
    assert not sr.PatientSex and not sr.StudyDate
