"""The shipped subset of highdicom's module table is highdicom's own, and the SEG, SR and
overlay SC written with it are the objects written without it, byte for byte."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import highdicom
import pydicom
import pytest

from cxr_core import Analysis, build_dicom_results, read_radiograph
from cxr_core.writers import module_table
from cxr_core.writers.dicom import DicomOptions
from cxr_core.writers.module_table import (
    ModuleTable,
    highdicom_loader,
    read_subset,
    subset_keys,
)
from tests.conftest import DICOM_SAMPLES, RG1_UNCR
from tests.test_sr_fast import CLOCK, _differences

NIH = next(DICOM_SAMPLES.glob("nih_gcp_*.dcm"))  # a Secondary Capture source
STAMPED = CLOCK | {"DateOfSecondaryCapture", "TimeOfSecondaryCapture"}
"""What highdicom stamps with the time of writing (the overlay SC's capture time too)."""


def test_the_shipped_modules_are_highdicoms_entries() -> None:
    subset = read_subset()
    assert subset is not None, "regenerate it: python scripts/make_module_table.py"
    full = highdicom_loader()()
    assert sorted(subset) == subset_keys()
    assert {key: full[key] for key in subset} == subset
    assert {"segmentation-image", "sr-document-general", "patient", "general-study",
            "cr-image", "dx-image", "sc-image", "specimen"} <= set(subset)


def test_a_subset_of_another_highdicom_is_ignored(tmp_path: Path) -> None:
    document = json.loads(module_table.SUBSET_FILE.read_text())
    for key, value in (("highdicom", "0.0.1"), ("source_bytes", 1)):
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps(document | {key: value}))
        assert read_subset(path) is None
    assert read_subset(tmp_path / "absent.json") is None


def test_the_table_reads_the_full_one_only_for_another_module() -> None:
    full = {"a": [1], "b": [2]}
    reads: list[int] = []

    def load() -> dict[str, list[int]]:
        reads.append(1)
        return dict(full)

    table = ModuleTable({"a": [1]}, load)
    assert "a" in table and table["a"] == [1] and table.get("a") == [1]
    assert not table.complete and not reads
    assert "b" in table and table["b"] == [2]  # another module: the full table, once
    assert table.complete and len(reads) == 1
    assert "c" not in table and table.get("c", 0) == 0
    with pytest.raises(KeyError):
        table["c"]
    assert table == full and len(table) == 2 and sorted(table) == ["a", "b"]
    assert len(reads) == 1
    other = ModuleTable({"a": [1]}, load)
    assert other.get("c") is None and other.complete  # a miss reads it too
    assert dict(ModuleTable({"a": [1]}, load).items()) == full  # so does any whole view


def _loaded_highdicom_modules() -> list[object]:
    return [module for name, module in sys.modules.items()
            if name == "highdicom" or name.startswith("highdicom.")]


def _build(analysis: Analysis, loader: object, monkeypatch: pytest.MonkeyPatch,
           ) -> list[pydicom.Dataset]:
    """SEG, SR, heat-map SEG and overlay SC, with highdicom looking modules up through
    ``loader``."""
    current = highdicom._standard_utils.get_module_attribute_map
    with monkeypatch.context() as patch:
        for module in _loaded_highdicom_modules():
            if getattr(module, "get_module_attribute_map", None) is current:
                patch.setattr(module, "get_module_attribute_map", loader)
        results = build_dicom_results(analysis.radiograph.source_dataset, analysis,
                                      DicomOptions(overlay=True, heatmaps=True))
    return [dataset for _, dataset in results.items()]


def _bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _pin_clock(ours: pydicom.Dataset, reference: pydicom.Dataset) -> None:
    for keyword in STAMPED:
        if keyword in reference:
            setattr(ours, keyword, reference[keyword].value)
    for mine, theirs in zip(ours.get("ContributingEquipmentSequence", []),
                            reference.get("ContributingEquipmentSequence", []), strict=True):
        if "ContributionDateTime" in theirs:
            mine.ContributionDateTime = theirs.ContributionDateTime


@pytest.mark.parametrize("path", [RG1_UNCR, NIH], ids=["CR", "SC"])
def test_the_objects_written_with_the_subset_are_highdicoms(engine, path: Path,  # noqa: ANN001
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            ) -> None:
    analysis = engine.analyze(read_radiograph(path))
    subset = read_subset()
    assert subset is not None
    table = ModuleTable(subset, highdicom_loader())
    ours = _build(analysis, lambda: table, monkeypatch)
    assert not table.complete  # the shipped modules were all highdicom needed
    reference = _build(analysis, highdicom_loader(), monkeypatch)
    assert len(ours) == len(reference) == 4  # a positive finding: the heat-map SEG too
    for mine, theirs in zip(ours, reference, strict=True):
        _pin_clock(mine, theirs)
        assert not list(_differences(mine, theirs)), theirs.Modality
        assert _bytes(mine) == _bytes(theirs), theirs.Modality


def test_writing_a_seg_points_highdicom_at_the_table_once() -> None:
    """In a fresh interpreter (highdicom has read nothing yet): every highdicom module
    that looks the table up gets the shipped one, and answers from it."""
    script = """
import sys
import highdicom
from highdicom import _standard_utils
from cxr_core.writers.module_table import use_shipped_modules
table = use_shipped_modules()
assert table is not None and use_shipped_modules() is table
users = sorted(name for name, module in sys.modules.items()
               if name.startswith("highdicom")
               and getattr(module, "get_module_attribute_map", None) is not None)
assert all(sys.modules[name].get_module_attribute_map() is table for name in users)
assert _standard_utils.is_attribute_in_iod("ContentDate", "1.2.840.10008.5.1.4.1.1.66.4")
print(" ".join(users), table.complete)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["highdicom._standard_utils", "highdicom.base",
                                     "highdicom.image", "False"]
