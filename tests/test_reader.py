"""Reading real radiographs into Radiograph objects, and refusing what is not one."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cxr_core.io import RefusedInput, read_radiograph
from cxr_core.quality import check_polarity
from cxr_core.radiograph import SpacingSource
from tests.conftest import DICOM_SAMPLES, RG1_UNCR

CHEST_SAMPLES = sorted(p for p in DICOM_SAMPLES.glob("*.dcm") if p.name != "RG3_J2KR.dcm")


@pytest.mark.parametrize("path", CHEST_SAMPLES, ids=lambda p: p.name[:24])
def test_every_chest_sample_reads_as_monochrome2(path: Path) -> None:
    radiograph = read_radiograph(path)
    assert radiograph.pixels.dtype == np.float32
    assert radiograph.pixels.ndim == 2 and min(radiograph.shape) >= 1024
    assert radiograph.source_dataset is not None
    assert "PixelData" not in radiograph.source_dataset
    if path.name != "txv_Fake_MONOHR1.dcm":
        # MONOCHROME1 files are inverted: the mediastinum is brighter than the lungs
        assert check_polarity(radiograph.pixels) == "normal"


def test_lossless_and_uncompressed_decode_identically() -> None:
    uncompressed = read_radiograph(RG1_UNCR).pixels
    lossless = read_radiograph(DICOM_SAMPLES / "RG1_J2KR.dcm").pixels
    lossy = read_radiograph(DICOM_SAMPLES / "RG1_J2KI.dcm").pixels
    np.testing.assert_array_equal(uncompressed, lossless)
    assert np.corrcoef(uncompressed.ravel()[::97], lossy.ravel()[::97])[0, 1] > 0.99


def test_zero_pixel_spacing_is_unknown_and_sc_spacing_is_kept() -> None:
    assert read_radiograph(RG1_UNCR).spacing.source is SpacingSource.UNKNOWN
    siim = read_radiograph(next(DICOM_SAMPLES.glob("siim_*.dcm")))
    assert siim.spacing.source is SpacingSource.PIXEL_SPACING
    assert siim.spacing.row_mm == pytest.approx(0.168) and siim.spacing.trusted


def test_dx_without_body_part_view_or_spacing_is_read(tmp_path: Path) -> None:
    radiograph = read_radiograph(next(DICOM_SAMPLES.glob("nih_gcp_*.dcm")))
    assert radiograph.view_position is None
    assert radiograph.spacing.source is SpacingSource.UNKNOWN


def _modified_copy(tmp_path: Path, source: Path, **attributes: object) -> Path:
    dataset = pydicom.dcmread(source)
    for keyword, value in attributes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    target = tmp_path / f"modified_{source.name}"
    dataset.save_as(target)
    return target


def test_imager_pixel_spacing_is_recorded_as_such(tmp_path: Path) -> None:
    path = _modified_copy(tmp_path, RG1_UNCR, PixelSpacing=None, ImagerPixelSpacing=[0.2, 0.2])
    spacing = read_radiograph(path).spacing
    assert spacing.source is SpacingSource.IMAGER_PIXEL_SPACING
    assert not spacing.trusted and spacing.row_mm == pytest.approx(0.2)


def test_imager_spacing_with_magnification_is_calibrated(tmp_path: Path) -> None:
    path = _modified_copy(tmp_path, RG1_UNCR, PixelSpacing=None, ImagerPixelSpacing=[0.2, 0.2],
                          EstimatedRadiographicMagnificationFactor=1.25)
    spacing = read_radiograph(path).spacing
    assert spacing.source is SpacingSource.CALIBRATED and spacing.trusted
    assert spacing.row_mm == pytest.approx(0.16)


def test_modality_lut_is_applied(tmp_path: Path) -> None:
    source = next(DICOM_SAMPLES.glob("nih_gcp_*.dcm"))
    plain = read_radiograph(source).pixels
    path = _modified_copy(tmp_path, source, RescaleSlope=2, RescaleIntercept=-10)
    rescaled = read_radiograph(path).pixels
    np.testing.assert_allclose(rescaled, plain * 2 - 10)


def test_voi_window_is_applied(tmp_path: Path) -> None:
    source = next(DICOM_SAMPLES.glob("nih_gcp_*.dcm"))
    path = _modified_copy(tmp_path, source, WindowCenter=100, WindowWidth=50)
    windowed = read_radiograph(path).pixels
    plain = read_radiograph(source).pixels
    assert windowed[plain < 70].std() == 0  # below the window: clipped to one value
    assert windowed[plain > 130].std() == 0


def test_fake_monochrome1_is_suspected() -> None:
    radiograph = read_radiograph(DICOM_SAMPLES / "txv_Fake_MONOHR1.dcm")
    assert check_polarity(radiograph.pixels) == "inverted"


def test_extremity_is_refused_with_reason() -> None:
    with pytest.raises(RefusedInput, match="body part not chest"):
        read_radiograph(DICOM_SAMPLES / "RG3_J2KR.dcm")


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    data = RG1_UNCR.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(RefusedInput, match="pixel data|unreadable"):
        read_radiograph(truncated)


def test_non_image_dicom_is_refused(tmp_path: Path) -> None:
    dataset = pydicom.dcmread(RG1_UNCR)
    del dataset.PixelData
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    path = tmp_path / "report.dcm"
    dataset.save_as(path)
    with pytest.raises(RefusedInput, match="not an image: Comprehensive SR"):
        read_radiograph(path)


def test_not_dicom_at_all_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("not a radiograph")
    with pytest.raises(RefusedInput):
        read_radiograph(path)


def test_every_shared_png_reads(shared_data: Path) -> None:
    """Every shared PNG except the 64 px NIH thumbnails, which the size limit refuses
    (128 px per side, as for DICOM; no model trains on them)."""
    count = 0
    for manifest in sorted(shared_data.glob("*/manifest.csv")):
        if not (manifest.parent / "images").is_dir():
            continue
        with manifest.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if manifest.parent.name == "nih_cxr14_tiny64":
                    with pytest.raises(RefusedInput, match="64x64 px is too small"):
                        read_radiograph(manifest.parent / row["image"])
                    continue
                radiograph = read_radiograph(manifest.parent / row["image"])
                assert radiograph.pixels.ndim == 2
                assert radiograph.spacing.source is SpacingSource.UNKNOWN
                count += 1
    assert count > 2500


def test_copied_folder_inputs_expand(tmp_path: Path) -> None:
    from cxr_core.io import expand_inputs

    shutil.copy(RG1_UNCR, tmp_path / "a.dcm")
    (tmp_path / ".hidden").mkdir()
    shutil.copy(RG1_UNCR, tmp_path / ".hidden" / "b.dcm")
    assert [p.name for p in expand_inputs([tmp_path])] == ["a.dcm"]


@pytest.mark.parametrize("name", ["siim_*.dcm", "RG1_J2KR.dcm"])
def test_truncated_compressed_frame_is_refused(tmp_path: Path, name: str) -> None:
    """Decoders pad a cut JPEG frame with gray instead of failing: it must be refused."""
    from pydicom.encaps import encapsulate, generate_frames

    source = next(DICOM_SAMPLES.glob(name))
    dataset = pydicom.dcmread(source)
    frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
    dataset.PixelData = encapsulate([frame[: len(frame) // 2]])
    path = tmp_path / "cut.dcm"
    dataset.save_as(path)
    with pytest.raises(RefusedInput, match="truncated"):
        read_radiograph(path)
