"""No patient or header text in logs, reasons, the database, /metrics, /healthz or
``cxr-node status`` (issue 14 item 6, red team F7); unknown character sets are
quarantined with a reason (F12).

A marker is planted in every string element of a real CR (RG1, 1955 x 1841), and, one
instance each, in the attributes reasons used to quote (Modality, BodyPartExamined,
ViewPosition, PhotometricInterpretation, SpecificCharacterSet) and in every date, time,
age and number string. Then every output the node has is searched for it.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.uid import generate_uid

from tests.node.node_helpers import CR_UNCOMPRESSED, NodeProcess, storescu

MARKER = "ZQXMARK"
TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC", "AE", "CS"}
NUMBER_TIME_VRS = {"DA", "TM", "DT", "AS", "DS", "IS"}
FUNCTIONAL = {"Modality", "BodyPartExamined", "ViewPosition", "PhotometricInterpretation",
              "SpecificCharacterSet", "ImageType"}
"""String elements whose value decides what happens: planted one at a time."""
ABSENT_TEXT = {"PatientComments": MARKER, "OperatorsName": MARKER, "SeriesDescription": MARKER,
               "ProtocolName": MARKER, "PerformingPhysicianName": MARKER}


def _instance(folder: Path, name: str, study_uid: str, keywords: set[str] | None = None,
              vrs: set[str] | None = None) -> tuple[str, Path]:
    """A copy of the CR with the marker in ``keywords``, or in every element of ``vrs``
    (functional ones excepted)."""
    dataset = pydicom.dcmread(CR_UNCOMPRESSED)
    chosen = [element.tag for element in dataset
              if keywords is not None and element.keyword in keywords or (
                  vrs is not None and element.VR in vrs and element.keyword not in FUNCTIONAL)]
    for tag in chosen:
        vr = dataset[tag].VR
        text = f"{MARKER}^{name}" if vr == "PN" else f"{MARKER} {name}"
        value = text[:16].strip().encode()  # 16: the shortest maximum of these VRs
        value += b" " * (len(value) % 2)
        # raw bytes: pydicom would refuse to hold a number string that is not a number
        dataset[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    if vrs is not None and "PN" in vrs:
        for keyword, value in ABSENT_TEXT.items():
            setattr(dataset, keyword, value)
    dataset.StudyInstanceUID = study_uid
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    path = folder / f"{name}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return str(dataset.SOPInstanceUID), path


def test_planted_text_reaches_no_output(tmp_path: Path, processes: list) -> None:
    node = NodeProcess(tmp_path / "node", destinations=[],
                       extra='[filters]\nviews = ["PA", "AP"]\n')
    processes.append(node)
    node.start()
    folder = tmp_path / "in"
    folder.mkdir()
    study = generate_uid()
    cases = {
        "every_text": _instance(folder, "every_text", study, vrs=TEXT_VRS - {"CS"}),
        "every_cs": _instance(folder, "every_cs", study, vrs={"CS"}),
        "numbers_dates": _instance(folder, "numbers_dates", study, vrs=NUMBER_TIME_VRS),
        **{keyword: _instance(folder, keyword, study, keywords={keyword})
           for keyword in sorted(FUNCTIONAL - {"ImageType"})},
    }
    charset = pydicom.dcmread(cases["every_text"][1])
    charset.SpecificCharacterSet = "ISO_IR 999"
    charset.SOPInstanceUID = generate_uid()
    charset.file_meta.MediaStorageSOPInstanceUID = charset.SOPInstanceUID
    charset.save_as(folder / "charset_999.dcm", enforce_file_format=True)
    cases["charset_999"] = (str(charset.SOPInstanceUID), folder / "charset_999.dcm")
    sent = storescu([path for _, path in cases.values()], node.port)
    assert sent.returncode == 0 and MARKER not in sent.stderr
    states = node.wait_instances({uid for uid, _ in cases.values()},
                                 {"processed", "ignored", "refused", "failed"}, timeout=240)
    fates = {name: states[uid] for name, (uid, _) in cases.items()}
    print("\n".join(f"{name}: {state} ({reason})" for name, (state, reason) in fates.items()))
    assert fates["every_text"][0] == "processed"
    assert fates["Modality"] == ("ignored", "modality not processed")
    assert fates["BodyPartExamined"] == ("ignored", "body part not chest")
    assert fates["ViewPosition"] == ("ignored", "view not processed")
    for name in ("SpecificCharacterSet", "charset_999"):  # F12
        assert fates[name] == ("refused", "unknown character set")
        assert list((node.storage / "quarantine").rglob(f"{cases[name][0]}.dcm"))
    # free text in every CS (PatientSex, PatientOrientation...): the result writer copies
    # no value its VR or enumeration forbids, so the instance is processed (was 'failed')
    assert fates["every_cs"][0] == "processed"
    assert all(state != "failed" for state, _ in fates.values())
    outputs = {"log": node.log(), "metrics": node.http("/metrics")[1],
               "healthz": node.http("/healthz")[1],
               "status": node.cli("status").stdout + node.cli("status").stderr}
    for database in node.storage.glob("node.sqlite*"):
        outputs[database.name] = database.read_bytes().decode("latin-1")
    leaks = {name: text.count(MARKER) for name, text in outputs.items() if MARKER in text}
    assert not leaks, leaks
    assert node.stop() == 0


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO 2022 IR 6\\ISO 2022 IR 87", ""])
def test_known_character_sets_pass(charset: str) -> None:
    from dicom_node.worker import unknown_character_set

    header = pydicom.Dataset()
    if charset:
        header.SpecificCharacterSet = charset.split("\\")
    assert not unknown_character_set(header)
