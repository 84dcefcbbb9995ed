"""Hostile and broken inputs, built in a temp folder from copies of the shared samples."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import encapsulate, generate_fragmented_frames
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.dsutils import split_dataset

from tests.node.node_helpers import CR_J2K_LOSSY, DX_NIH

Edit = Callable[[pydicom.Dataset], None]
# An over-long person name makes pydicom warn, quoting it: it must not reach the node's log
PATIENT_MARKER = "ZZTOPSECRET"
PATIENT_NAME = PATIENT_MARKER + "^" + "Q" * 70


def fresh_copy(source: Path) -> pydicom.Dataset:
    """A copy of a sample with new UIDs and the patient marker as name and ID."""
    dataset = pydicom.dcmread(source)
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.PatientName = PATIENT_NAME
    dataset.PatientID = PATIENT_MARKER + "-ID"
    return dataset


def _save(dataset: pydicom.Dataset, folder: Path, name: str) -> Path:
    path = folder / f"{name}.dcm"
    dataset.save_as(path, enforce_file_format=False)
    return path


def _dataset_edits() -> dict[str, Edit]:
    def set_(**values: object) -> Edit:
        def edit(ds: pydicom.Dataset) -> None:
            for keyword, value in values.items():
                setattr(ds, keyword, value)
        return edit

    def half_pixels(ds: pydicom.Dataset) -> None:
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]

    def no_pixels(ds: pydicom.Dataset) -> None:
        del ds.PixelData

    def blank(ds: pydicom.Dataset) -> None:
        ds.PixelData = bytes(len(ds.PixelData))

    def tiny(ds: pydicom.Dataset) -> None:
        ds.Rows = ds.Columns = 16
        ds.PixelData = np.arange(256, dtype=np.uint8).tobytes()

    def no_study(ds: pydicom.Dataset) -> None:
        del ds.StudyInstanceUID

    def text_sr(ds: pydicom.Dataset) -> None:
        del ds.PixelData
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
        ds.Modality = "SR"

    return {
        "truncated_pixel_data": half_pixels,
        "missing_pixel_data": no_pixels,
        "absurd_rows": set_(Rows=60000),
        "zero_columns": set_(Columns=0),
        "columns_mismatch": set_(Columns=4096),
        "bits_allocated_7": set_(BitsAllocated=7),
        "colour_samples": set_(SamplesPerPixel=3, PhotometricInterpretation="RGB"),
        "multi_frame": set_(NumberOfFrames=5),
        "palette_colour": set_(PhotometricInterpretation="PALETTE COLOR"),
        "blank_image": blank,
        "rescale_slope_zero": set_(RescaleSlope=0, RescaleIntercept=0),
        "tiny_image": tiny,
        "missing_study_uid": no_study,
        "long_study_uid": set_(StudyInstanceUID="1." + "2" * 80),
        "path_like_study_uid": set_(StudyInstanceUID="1.2.3/../../../../tmp/evil"),
        "backslash_study_uid": set_(StudyInstanceUID="1.2.3\\4.5"),
        "non_image_text_sr": text_sr,
        "wrong_modality": set_(Modality="MR"),
        "foot_not_chest": set_(BodyPartExamined="FOOT"),
    }


def _truncated_j2k(folder: Path) -> Path:
    # (a cut JPEG baseline frame is not a good case: libjpeg pads it and decodes)
    dataset = fresh_copy(CR_J2K_LOSSY)
    frame = b"".join(next(generate_fragmented_frames(dataset.PixelData, number_of_frames=1)))
    dataset.PixelData = encapsulate([frame[:2000]])
    return _save(dataset, folder, "truncated_j2k")


def _explicit_nih(folder: Path, name: str) -> tuple[Path, bytes]:
    dataset = fresh_copy(DX_NIH)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = _save(dataset, folder, name)
    return path, path.read_bytes()


def _patch_rows(data: bytes, replacement: bytes) -> bytes:
    """Replace the 8 bytes 'tag VR length' of (0028,0010) Rows in explicit VR LE."""
    marker = struct.pack("<HH", 0x0028, 0x0010) + b"US"
    at = data.index(marker, 132 + 100)  # after the file meta
    return data[:at] + replacement + data[at + len(replacement):]


def _raw_cases(folder: Path) -> dict[str, Path]:
    cases = {}
    path, data = _explicit_nih(folder, "bad_vr_code")
    path.write_bytes(_patch_rows(data, struct.pack("<HH", 0x0028, 0x0010) + b"QQ"))
    cases["bad_vr_code"] = path
    path, data = _explicit_nih(folder, "huge_element_length")
    path.write_bytes(_patch_rows(data, struct.pack("<HH", 0x0028, 0x0010) + b"US\xf0\xff"))
    cases["huge_element_length"] = path
    path, data = _explicit_nih(folder, "truncated_file")
    path.write_bytes(data[: int(len(data) * 0.6)])
    cases["truncated_file"] = path
    path, data = _explicit_nih(folder, "garbage_dataset")
    meta_end = split_dataset(path)[1]  # the dataset starts here
    path.write_bytes(data[:meta_end] + os.urandom(4096))
    cases["garbage_dataset"] = path
    dataset = fresh_copy(DX_NIH)
    dataset.SOPInstanceUID = "../../../../tmp/evil"
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    cases["path_like_sop_uid"] = _save(dataset, folder, "path_like_sop_uid")
    dataset = fresh_copy(DX_NIH)
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # request != dataset
    cases["sop_uid_mismatch"] = _save(dataset, folder, "sop_uid_mismatch")
    cases["truncated_j2k"] = _truncated_j2k(folder)
    return cases


def build_malformed(folder: Path) -> dict[str, Path]:
    """Name -> file; each must be refused or quarantined, never analysed."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = {}
    for name, edit in _dataset_edits().items():
        dataset = fresh_copy(DX_NIH)
        edit(dataset)
        cases[name] = _save(dataset, folder, name)
    cases.update(_raw_cases(folder))
    return cases
