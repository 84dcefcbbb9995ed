"""DICOM CR / DX / Secondary Capture -> :class:`Radiograph`.

Everything a received file says is untrusted: each attribute the engine relies on is
checked here, and anything odd becomes a :class:`RefusedInput` with a one-line reason.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.encaps
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID

from cxr_core.io.errors import RefusedInput
from cxr_core.io.limits import (
    check_dicom_decode_limits,
    check_inflated_size,
    check_size,
)
from cxr_core.io.lossy import complete_lossy_compression
from cxr_core.radiograph import CHEST_BODY_PARTS, PixelSpacing, Radiograph, SpacingSource

ACCEPTED_SOP_CLASSES = frozenset({
    pydicom.uid.ComputedRadiographyImageStorage,
    pydicom.uid.DigitalXRayImageStorageForPresentation,
    pydicom.uid.DigitalXRayImageStorageForProcessing,
    pydicom.uid.SecondaryCaptureImageStorage,
})
"""CR, DX (for presentation and for processing) and Secondary Capture."""
ACCEPTED_MODALITIES = frozenset({"CR", "DX", "OT", ""})
LEGACY_SUFFIXES = frozenset({"", ".dcm", ".dicom", ".ima", ".img"})
"""Names under which a DICOM file without preamble and File Meta (ACR-NEMA style) is
looked for: other suffixes belong to other formats and are never force-read."""
# The first tag of a dataset without preamble: File Meta (0002,xxxx) when only the
# preamble is missing, else Identifying (0008,xxxx), which holds SOPClassUID and so comes
# first in any image dataset we accept (tags are stored in ascending order). Little
# endian, implicit or explicit VR: the encodings of such files in practice.
_FIRST_GROUPS = (b"\x02\x00", b"\x08\x00")


def read_dicom_radiograph(path: Path, *, radiograph_id: str | None = None) -> Radiograph:
    """Read one DICOM file as a chest radiograph.

    Raises
    ------
    RefusedInput
        When the file is not DICOM, not a single-frame grayscale CR/DX/SC image, says it
        shows another body part, or its pixel data cannot be decoded.
    """
    try:
        return _read(path, radiograph_id)
    except RefusedInput:
        raise
    except Exception as error:  # pydicom parses lazily: a bad element can fail anywhere
        raise RefusedInput(f"malformed DICOM ({type(error).__name__})") from error


def _read(path: Path, radiograph_id: str | None) -> Radiograph:
    dataset, legacy = _read_dataset(path)
    _check_is_chest_image(dataset)
    pixels = _presentation_pixels(dataset)
    view = str(dataset.get("ViewPosition", "") or "").upper() or None
    header = _header_without_pixels(dataset)
    return Radiograph(
        pixels=pixels,
        spacing=read_pixel_spacing(dataset),
        id=radiograph_id or path.stem,
        view_position=view,
        source_dataset=header,
        mirrored=_is_mirrored(dataset),
        legacy_format=legacy,
    )


def _read_dataset(path: Path) -> tuple[pydicom.Dataset, bool]:
    """The dataset, and whether it was read as a legacy file (no preamble, no File Meta)."""
    legacy = False
    dataset: pydicom.Dataset
    _check_deflated_size(path)
    try:
        dataset = pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError as error:
        dataset, legacy = _read_legacy(path, f"not a DICOM file ({error})"), True
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as error:
        raise RefusedInput(f"unreadable DICOM ({type(error).__name__})") from error
    if "PixelData" not in dataset:
        name = _sop_class_name(dataset)
        raise RefusedInput(f"not an image: {name} has no pixel data")
    return dataset, legacy


def _check_deflated_size(path: Path) -> None:
    """A deflated dataset is inflated whole by pydicom: check what it inflates to first."""
    try:
        with path.open("rb") as handle:
            head = handle.read(2**16)
            start = _dataset_offset(head)
            syntax = pydicom.uid.DeflatedExplicitVRLittleEndian.encode()
            if start is None or syntax not in head[132:start]:
                return
            handle.seek(start)
            deflated = handle.read()
    except OSError:
        return  # dcmread reports it
    check_inflated_size(deflated)


def _dataset_offset(data: bytes) -> int | None:
    """Where the dataset starts in a Part 10 file whose File Meta has its group length
    ((0002,0000) UL, explicit VR, first); None otherwise."""
    if data[128:132] != b"DICM" or data[132:138] != b"\x02\x00\x00\x00UL":
        return None
    return 132 + 12 + int.from_bytes(data[140:144], "little")


def is_legacy_dicom(path: Path) -> bool:
    """True when ``path`` is a DICOM dataset stored without preamble and File Meta (an
    ACR-NEMA style file) that names its SOP class; only the header is read.

    Used to find such files among others (``expand_inputs``): the name must be one of
    :data:`LEGACY_SUFFIXES` and the first bytes a dataset's first tag, so random files in
    a folder are not parsed; whether it is an image we analyse is decided on reading.
    """
    if path.suffix.lower() not in LEGACY_SUFFIXES or not _starts_like_dataset(path):
        return False
    try:
        header = _force_read(path, stop_before_pixels=True)
    except Exception:  # anything pydicom cannot parse is simply not one
        return False
    return "SOPClassUID" in header


def _starts_like_dataset(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(2) in _FIRST_GROUPS
    except OSError:
        return False


def _force_read(path: Path, *, stop_before_pixels: bool = False) -> pydicom.Dataset:
    # pydicom warns about every odd element of a guessed encoding; a refusal or an
    # acceptance below says what matters in one line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)


def _read_legacy(path: Path, refusal: str) -> pydicom.Dataset:
    """Read a file without preamble and File Meta, accepting it only as a valid image.

    Old CR/DX archives hold such files (ACR-NEMA 2.0 style, implicit VR little endian).
    ``dcmread(force=True)`` parses almost anything, so the dataset must name an accepted
    SOP class and carry uncompressed pixel data of exactly the size its header declares;
    it then gets the File Meta it lacks, so the pixels decode with its encoding.

    Raises
    ------
    RefusedInput
        ``refusal`` when the file does not start like a dataset or does not parse; what is
        wrong with it when it parses but is not such an image.
    """
    if path.suffix.lower() not in LEGACY_SUFFIXES or not _starts_like_dataset(path):
        raise RefusedInput(refusal)
    try:
        dataset = _force_read(path)
    except Exception as error:  # a guessed encoding can fail anywhere
        raise RefusedInput(refusal) from error
    problem = _legacy_image_problem(dataset)
    if problem is not None:
        raise RefusedInput(f"not a readable DICOM image: no File Meta, and {problem}")
    if "TransferSyntaxUID" not in dataset.file_meta:
        _add_file_meta(dataset)
    return dataset


def _legacy_image_problem(dataset: pydicom.Dataset) -> str | None:
    """Why ``dataset`` (read without File Meta) is not an image we can trust, or None."""
    if "SOPClassUID" not in dataset or "SOPInstanceUID" not in dataset:
        return "no SOPClassUID or SOPInstanceUID"
    sop_class = UID(str(dataset.SOPClassUID))
    if sop_class not in ACCEPTED_SOP_CLASSES:
        return f"SOP class {safe_uid_name(sop_class)} is not CR, DX or SC"
    missing = [k for k in ("Rows", "Columns", "BitsAllocated", "PixelData") if k not in dataset]
    if missing:
        return f"{', '.join(missing)} missing"
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    if syntax is not None and UID(str(syntax)).is_compressed:
        return None  # only the preamble is missing: the decoder checks the codestream
    if dataset["PixelData"].is_undefined_length:
        return "compressed pixel data without a transfer syntax"
    rows, columns = int(dataset.Rows or 0), int(dataset.Columns or 0)
    bits = int(dataset.BitsAllocated or 0)
    if bits not in (8, 16):
        return f"BitsAllocated is {bits}; expected 8 or 16"
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    expected = rows * columns * samples * frames * bits // 8
    size = len(dataset.PixelData)
    # an odd length is padded to even (PS3.5 7.1.1)
    if expected == 0 or size not in (expected, expected + expected % 2):
        return (f"pixel data holds {size} bytes where {rows}x{columns} pixels of "
                f"{bits} bits need {expected}")
    return None


def _add_file_meta(dataset: pydicom.Dataset) -> None:
    """File Meta for a dataset read without it: its transfer syntax is the encoding the
    reader found (implicit VR little endian for ACR-NEMA style files)."""
    implicit, little = dataset.original_encoding
    syntax = (pydicom.uid.ImplicitVRLittleEndian if implicit or implicit is None else
              pydicom.uid.ExplicitVRBigEndian if little is False else
              pydicom.uid.ExplicitVRLittleEndian)
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    dataset.file_meta = meta


def _sop_class_name(dataset: pydicom.Dataset) -> str:
    sop_class = dataset.get("SOPClassUID")
    if sop_class is None:
        return "a dataset without SOPClassUID"
    return safe_uid_name(UID(str(sop_class)))


def safe_uid_name(uid: UID) -> str:
    """The dictionary name of ``uid``, else the UID itself when it is digits and dots, else
    ``an unknown UID``: a reason never quotes free text found in a UI element."""
    if uid.name != uid:
        return uid.name
    return str(uid) if uid.is_valid else "an unknown UID"


def _check_is_chest_image(dataset: pydicom.Dataset) -> None:
    sop_class = UID(str(dataset.get("SOPClassUID", "")))
    if sop_class not in ACCEPTED_SOP_CLASSES:
        raise RefusedInput(f"not a radiograph: SOP class {safe_uid_name(sop_class)} is not CR, DX "
                           "or SC")
    modality = str(dataset.get("Modality", "") or "").upper()
    if modality not in ACCEPTED_MODALITIES:
        raise RefusedInput("not a radiograph: Modality not CR, DX or OT")
    body_part = str(dataset.get("BodyPartExamined", "") or "").upper().strip()
    if body_part and body_part not in CHEST_BODY_PARTS:
        raise RefusedInput("not a chest radiograph: body part not chest")
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise RefusedInput(f"not a grayscale radiograph: SamplesPerPixel is {samples}")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise RefusedInput(f"multi-frame image ({frames} frames); expected one radiograph")
    check_size(int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0))
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    if photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise RefusedInput("PhotometricInterpretation is not MONOCHROME1 or MONOCHROME2")


# Transfer syntaxes whose codestreams end with the FFD9 marker (EOI / EOC): JPEG baseline,
# extended, lossless, JPEG-LS and JPEG 2000.
_JPEG_FAMILY_PREFIXES = ("1.2.840.10008.1.2.4.",)


def _check_codestream_complete(dataset: pydicom.Dataset) -> None:
    """A truncated JPEG frame decodes without error (the decoder pads it with gray), so the
    end-of-image marker is checked before trusting the pixels."""
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    if not syntax.startswith(_JPEG_FAMILY_PREFIXES):
        return
    frame = next(pydicom.encaps.generate_frames(dataset.PixelData, number_of_frames=1))
    if not frame.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise RefusedInput("compressed pixel data is truncated (no end-of-image marker)")


def _presentation_pixels(dataset: pydicom.Dataset) -> np.ndarray:
    """Decode, apply Modality then VOI LUT, and make MONOCHROME2 float32."""
    check_dicom_decode_limits(dataset)
    _check_codestream_complete(dataset)
    try:
        stored = dataset.pixel_array
    except Exception as error:  # decoders raise many types; all mean the same to us
        raise RefusedInput(
            f"pixel data could not be decoded ({type(error).__name__})"
        ) from error
    if stored.ndim != 2:
        raise RefusedInput(f"pixel data has shape {stored.shape}; expected one 2D frame")
    try:
        values = apply_modality_lut(stored, dataset)
        values = _apply_voi(np.asarray(values, dtype=np.float32), dataset)
    except Exception as error:
        raise RefusedInput(f"invalid Modality/VOI LUT ({type(error).__name__})") from error
    pixels = np.asarray(values, dtype=np.float32)
    if not np.isfinite(pixels).all():
        raise RefusedInput("pixel data contains non-finite values after LUTs")
    if str(dataset.PhotometricInterpretation).upper() == "MONOCHROME1":
        pixels = pixels.max() + pixels.min() - pixels
    if float(pixels.max() - pixels.min()) <= 0:
        raise RefusedInput("blank image: every pixel has the same value")
    return pixels


def _apply_voi(values: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """VOI LUT or window. The usual LINEAR window is done here in float32 (PS3.3
    C.11.2.1.2.1), ~10x faster than pydicom's float64 path on a 2k x 2k radiograph; LUT
    sequences and the other window functions go to pydicom."""
    function = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    windowed = "WindowCenter" in dataset and "WindowWidth" in dataset
    if "VOILUTSequence" in dataset or function != "LINEAR" or not windowed:
        return apply_voi_lut(values, dataset, prefer_lut=True)
    center, width = (_first_value(dataset.WindowCenter), _first_value(dataset.WindowWidth))
    if center is None or width is None or width < 1:
        raise ValueError(f"window center {center} / width {width} are not usable")
    scaled = (values - np.float32(center - 0.5)) / np.float32(max(width - 1, 1)) + 0.5
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def _first_value(value: object) -> float | None:
    """WindowCenter/Width may hold several windows; the first is the default."""
    first = value[0] if isinstance(value, pydicom.multival.MultiValue) else value
    return _finite_number(first)


def _is_mirrored(dataset: pydicom.Dataset) -> bool:
    """True when the columns run towards the patient's right (mirrored display)."""
    orientation = dataset.get("PatientOrientation")
    return bool(orientation and len(orientation) == 2
                and str(orientation[0]).upper().startswith("R"))


def read_pixel_spacing(dataset: pydicom.Dataset) -> PixelSpacing:
    """Pixel spacing with its source; ``0\\0`` or malformed values count as unknown."""
    spacing = _positive_pair(dataset.get("PixelSpacing"))
    if spacing is not None:
        return PixelSpacing(spacing[0], spacing[1], SpacingSource.PIXEL_SPACING)
    imager = _positive_pair(dataset.get("ImagerPixelSpacing"))
    if imager is None:
        return PixelSpacing.unknown()
    magnification = _positive_number(dataset.get("EstimatedRadiographicMagnificationFactor"))
    if magnification is not None:
        return PixelSpacing(
            imager[0] / magnification, imager[1] / magnification, SpacingSource.CALIBRATED
        )
    return PixelSpacing(imager[0], imager[1], SpacingSource.IMAGER_PIXEL_SPACING)


def _positive_pair(value: Any) -> tuple[float, float] | None:
    try:
        row, column = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if all(math.isfinite(v) and 0 < v < 10 for v in (row, column)):
        return row, column
    return None


def _finite_number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _positive_number(value: object) -> float | None:
    number = _finite_number(value)
    return number if number is not None and number > 0 else None


def _header_without_pixels(dataset: pydicom.Dataset) -> pydicom.Dataset:
    header = pydicom.Dataset()
    header.file_meta = dataset.file_meta
    for element in dataset:
        if element.tag.group != 0x7FE0:
            header.add(element)
    complete_lossy_compression(header, dataset)
    return header
