"""Old CR/DX files without preamble and File Meta (ACR-NEMA style, implicit VR little
endian) are read when they hold a valid image, flagged, and give valid SEG and SR; what
only parses because pydicom was forced is still refused with a reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cxr_core import QualityFlag, build_dicom_results, expand_inputs, read_radiograph, read_seg
from cxr_core.io import RefusedInput
from tests.conftest import RG1_UNCR, dciodvfy_errors, dsrdump

# random bytes behind the first tag of a dataset: passes the cheap look at the start
STARTS_LIKE_DICOM = b"\x08\x00" + np.random.default_rng(0).bytes(4000)


def _write_legacy(dataset: pydicom.Dataset, path: Path) -> Path:
    """``dataset`` as an old archive holds it: no preamble, no File Meta, implicit VR LE."""
    del dataset.file_meta
    dataset.preamble = None
    pydicom.dcmwrite(path, dataset, enforce_file_format=False, implicit_vr=True,
                     little_endian=True)
    return path


@pytest.fixture(scope="module")
def legacy(tmp_path_factory) -> Path:
    return _write_legacy(pydicom.dcmread(RG1_UNCR),
                         tmp_path_factory.mktemp("legacy") / "RG1_UNCR_legacy.dcm")


def test_file_really_has_no_file_meta(legacy: Path) -> None:
    data = legacy.read_bytes()
    assert data[:2] == b"\x08\x00" and data[128:132] != b"DICM"
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(legacy)


def test_legacy_file_reads_to_the_same_pixels_and_is_marked(legacy: Path) -> None:
    original = read_radiograph(RG1_UNCR)
    radiograph = read_radiograph(legacy)
    np.testing.assert_array_equal(radiograph.pixels, original.pixels)
    assert radiograph.legacy_format and not original.legacy_format
    assert radiograph.spacing == original.spacing
    header = radiograph.source_dataset
    assert header is not None and "PixelData" not in header
    assert header.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    assert header.SOPInstanceUID == original.source_dataset.SOPInstanceUID


def test_legacy_file_without_suffix_is_found_and_read(legacy: Path, tmp_path: Path) -> None:
    """Old archives often name files by number: found in a folder when they parse as a
    DICOM dataset, while other files without a suffix are left alone."""
    shutil.copy(legacy, tmp_path / "00000001")
    (tmp_path / "README").write_text("not a radiograph\n")
    (tmp_path / "blob").write_bytes(STARTS_LIKE_DICOM)
    (tmp_path / "notes.txt").write_text("hello")
    assert [p.name for p in expand_inputs([tmp_path])] == ["00000001"]
    assert read_radiograph(tmp_path / "00000001").legacy_format
    for name in ("README", "blob"):
        with pytest.raises(RefusedInput, match="unsupported file type"):
            read_radiograph(tmp_path / name)


@pytest.mark.parametrize(("content", "reason"), [
    (b"not a radiograph, just text\n" * 40, "not a DICOM file"),
    (STARTS_LIKE_DICOM, "no File Meta, and no SOPClassUID"),
])
def test_forced_junk_is_refused_with_a_reason(tmp_path: Path, content: bytes,
                                              reason: str) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(content)
    with pytest.raises(RefusedInput, match=reason):
        read_radiograph(path)


def test_legacy_non_image_is_refused(tmp_path: Path) -> None:
    dataset = pydicom.dcmread(RG1_UNCR)
    del dataset.PixelData
    dataset.SOPClassUID = pydicom.uid.ComprehensiveSRStorage
    path = _write_legacy(dataset, tmp_path / "report.dcm")
    with pytest.raises(RefusedInput, match="no File Meta.*Comprehensive SR.*not CR, DX or SC"):
        read_radiograph(path)


def test_legacy_file_with_short_pixel_data_is_refused(tmp_path: Path) -> None:
    dataset = pydicom.dcmread(RG1_UNCR)
    dataset.PixelData = dataset.PixelData[: len(dataset.PixelData) // 2]
    path = _write_legacy(dataset, tmp_path / "short.dcm")
    with pytest.raises(RefusedInput, match=r"pixel data holds \d+ bytes"):
        read_radiograph(path)


def test_legacy_file_is_flagged_and_its_seg_and_sr_validate(legacy: Path, engine,
                                                            tmp_path: Path) -> None:
    analysis = engine.analyze(read_radiograph(legacy))
    assert QualityFlag.LEGACY_FILE_FORMAT in analysis.quality_flags
    results = build_dicom_results(analysis.radiograph.source_dataset, analysis)
    paths = {}
    for kind, dataset in results.items():
        paths[kind] = tmp_path / f"{kind}.dcm"
        dataset.save_as(paths[kind], enforce_file_format=True)
        assert dciodvfy_errors(paths[kind]) == [], kind
    masks = read_seg(paths["seg"]).masks
    for name, segment in analysis.segments.items():
        np.testing.assert_array_equal(masks[name], segment.mask)
    assert "legacy_file_format" in dsrdump(paths["sr"])
