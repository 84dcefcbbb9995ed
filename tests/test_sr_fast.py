"""The SR written with pydicom is the SR highdicom's template classes wrote, on real analyses.

``build_sr`` writes the TID 1500 content tree item by item with pydicom and lets
highdicom's ``ComprehensiveSR`` write only the document around it; the reference
(``tests/sr_highdicom_reference.py``) is the former code, which built the tree with
highdicom's classes and handed all of it to ``ComprehensiveSR``. Every element must match,
nested ones included, except the creation date and times highdicom stamps with the clock;
with those pinned to the reference's, the two files are the same bytes.
"""

from __future__ import annotations

import copy
import dataclasses
import io
from collections.abc import Iterator

import pydicom
import pytest

from cxr_core import Analysis, build_dicom_results, read_radiograph
from cxr_core.terminology import LUNG_ZONES
from cxr_core.writers.dicom import DicomOptions
from cxr_core.writers.sr import build_sr
from tests.conftest import DICOM_SAMPLES, RG1_UNCR
from tests.sr_highdicom_reference import build_sr_highdicom
from tests.test_sr_readers import _with_pneumothorax

NIH = next(DICOM_SAMPLES.glob("nih_gcp_*.dcm"))  # an NIH ChestX-ray14 image as a DX SC
SIIM = next(DICOM_SAMPLES.glob("siim_*.dcm"))  # trusted PixelSpacing: areas in mm2
CLOCK = {"InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
         "ContributionDateTime"}
"""What highdicom stamps with the time of writing: the only elements allowed to differ."""


@pytest.fixture(scope="module")
def analyses(engine) -> dict[str, Analysis]:  # noqa: ANN001
    """Real analyses, and variants of them that reach every branch of the report."""
    rg1 = engine.analyze(read_radiograph(RG1_UNCR))
    siim = engine.analyze(read_radiograph(SIIM))
    header = copy.deepcopy(rg1.radiograph.source_dataset)
    header.ImagerPixelSpacing = [0.15, 0.16]  # TID 1603's spacing rows
    noted = [dataclasses.replace(f, note="Decided by a rule, not by the probability.")
             if f.positive else f for f in rg1.findings]
    return {
        "2k CR, 7 positive findings": rg1,
        "NIH image": engine.analyze(read_radiograph(NIH)),
        "SIIM, spacing trusted": siim,
        "SIIM with a pneumothorax": _with_pneumothorax(siim),
        "notes and quality flags": dataclasses.replace(
            rg1, findings=noted, quality_flags=["low contrast"]),
        "no model recorded": dataclasses.replace(rg1, models=[]),
        "imager pixel spacing": dataclasses.replace(
            rg1, radiograph=dataclasses.replace(rg1.radiograph, source_dataset=header)),
    }


def _differences(ours: pydicom.Dataset, reference: pydicom.Dataset,
                 path: str = "") -> Iterator[str]:
    """Where two datasets differ: a missing element, another VR, value or value type, or
    a sequence of another length; nested items compared the same way."""
    for tag in sorted(set(ours.keys()) | set(reference.keys())):
        if tag not in ours or tag not in reference:
            yield f"{path}{tag} is only in {'ours' if tag in ours else 'the reference'}"
            continue
        mine, theirs = ours[tag], reference[tag]
        name = f"{path}{mine.keyword or tag}"
        if mine.VR != theirs.VR:
            yield f"{name}: VR {mine.VR} != {theirs.VR}"
        elif mine.VR == "SQ":
            if len(mine.value) != len(theirs.value):
                yield f"{name}: {len(mine.value)} items != {len(theirs.value)}"
            for index, (a, b) in enumerate(zip(mine.value, theirs.value, strict=False)):
                yield from _differences(a, b, f"{name}[{index}].")
        elif mine.value != theirs.value or type(mine.value) is not type(theirs.value):
            yield f"{name}: {mine.value!r} != {theirs.value!r}"


def _pin_clock(ours: pydicom.Dataset, reference: pydicom.Dataset) -> None:
    """Give ``ours`` the reference's creation date and times."""
    for keyword in CLOCK - {"ContributionDateTime"}:
        setattr(ours, keyword, reference[keyword].value)
    for mine, theirs in zip(ours.ContributingEquipmentSequence,
                            reference.ContributingEquipmentSequence, strict=True):
        if "ContributionDateTime" in theirs:
            mine.ContributionDateTime = theirs.ContributionDateTime


def _bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("with_seg", [True, False], ids=["with SEG", "without SEG"])
def test_the_sr_equals_highdicoms_element_by_element(analyses, with_seg: bool) -> None:  # noqa: ANN001
    for case, analysis in analyses.items():
        source = analysis.radiograph.source_dataset
        seg = (build_dicom_results(source, analysis, DicomOptions(heatmaps=False)).seg
               if with_seg else None)
        entropy = ("a digest of the source",)
        ours = build_sr(source, analysis, seg=seg, entropy=entropy)
        reference = build_sr_highdicom(source, analysis, seg=seg, entropy=entropy)
        differences = list(_differences(ours, reference))
        clock = [d for d in differences if d.split(":")[0].split(".")[-1] in CLOCK]
        assert differences == clock, case
        assert not list(_differences(ours.file_meta, reference.file_meta)), case
        _pin_clock(ours, reference)
        assert _bytes(ours) == _bytes(reference), case


def test_the_cases_reach_every_branch(analyses) -> None:  # noqa: ANN001
    """The comparison above covers what the report can hold: zones, a per-side
    pneumothorax, notes, the default observer, the spacing rows, mm2 areas."""
    tree = {case: _concepts(build_sr(a.radiograph.source_dataset, a))
            for case, a in analyses.items()}
    zones = {code.meaning for code in LUNG_ZONES.values()}
    assert zones & tree["2k CR, 7 positive findings"]  # the zones of positive findings
    assert {"PTXHEMI", "PTXCOLL"} & tree["SIIM with a pneumothorax"]
    assert "Comment" in tree["notes and quality flags"]
    assert "Horizontal Pixel Spacing" in tree["imager pixel spacing"]
    assert "Horizontal Pixel Spacing" not in tree["2k CR, 7 positive findings"]
    assert "mm2" in tree["SIIM, spacing trusted"]
    assert "mm2" not in tree["2k CR, 7 positive findings"]  # spacing unknown: pixel counts
    observers = _observers(build_sr(analyses["no model recorded"].radiograph.source_dataset,
                                    analyses["no model recorded"]))
    assert len(observers) == 1 and observers[0].startswith("SlicerCXR@")


def _concepts(dataset: pydicom.Dataset) -> set[str]:
    """Every concept name meaning and code value, and every unit, in the tree."""
    found: set[str] = set()
    for element in dataset.iterall():
        if element.keyword in ("CodeMeaning", "CodeValue"):
            found.add(str(element.value))
    return found


def _observers(dataset: pydicom.Dataset) -> list[str]:
    return [str(item.TextValue) for item in dataset.ContentSequence
            if item.ConceptNameCodeSequence[0].CodeValue == "121015"]  # Device Model Name
