"""DICOM CR / DX / Secondary Capture -> :class:`Radiograph`.

Everything a received file says is untrusted: each attribute the engine relies on is
checked here, and anything odd becomes a :class:`RefusedInput` with a one-line reason.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.encaps
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID

from cxr_core.io.errors import RefusedInput
from cxr_core.radiograph import CHEST_BODY_PARTS, PixelSpacing, Radiograph, SpacingSource

ACCEPTED_SOP_CLASSES = frozenset({
    pydicom.uid.ComputedRadiographyImageStorage,
    pydicom.uid.DigitalXRayImageStorageForPresentation,
    pydicom.uid.DigitalXRayImageStorageForProcessing,
    pydicom.uid.SecondaryCaptureImageStorage,
})
"""CR, DX (for presentation and for processing) and Secondary Capture."""
ACCEPTED_MODALITIES = frozenset({"CR", "DX", "OT", ""})
MIN_SIDE, MAX_SIDE = 128, 8192


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
        raise RefusedInput(f"malformed DICOM ({type(error).__name__}: {error})") from error


def _read(path: Path, radiograph_id: str | None) -> Radiograph:
    dataset = _read_dataset(path)
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
    )


def _read_dataset(path: Path) -> pydicom.Dataset:
    try:
        dataset = pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError as error:
        raise RefusedInput(f"not a DICOM file ({error})") from error
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as error:
        raise RefusedInput(f"unreadable DICOM ({type(error).__name__}: {error})") from error
    if "PixelData" not in dataset:
        name = _sop_class_name(dataset)
        raise RefusedInput(f"not an image: {name} has no pixel data")
    return dataset


def _sop_class_name(dataset: pydicom.Dataset) -> str:
    sop_class = dataset.get("SOPClassUID")
    if sop_class is None:
        return "a dataset without SOPClassUID"
    return UID(str(sop_class)).name


def _check_is_chest_image(dataset: pydicom.Dataset) -> None:
    sop_class = UID(str(dataset.get("SOPClassUID", "")))
    if sop_class not in ACCEPTED_SOP_CLASSES:
        raise RefusedInput(f"not a radiograph: SOP class {sop_class.name} is not CR, DX or SC")
    modality = str(dataset.get("Modality", "") or "").upper()
    if modality not in ACCEPTED_MODALITIES:
        raise RefusedInput(f"not a radiograph: Modality is {modality}")
    body_part = str(dataset.get("BodyPartExamined", "") or "").upper().strip()
    if body_part and body_part not in CHEST_BODY_PARTS:
        raise RefusedInput(f"not a chest radiograph: BodyPartExamined is {body_part}")
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise RefusedInput(f"not a grayscale radiograph: SamplesPerPixel is {samples}")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise RefusedInput(f"multi-frame image ({frames} frames); expected one radiograph")
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if not (MIN_SIDE <= rows <= MAX_SIDE and MIN_SIDE <= columns <= MAX_SIDE):
        raise RefusedInput(
            f"implausible image size {rows}x{columns}; expected {MIN_SIDE}..{MAX_SIDE} per side"
        )
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    if photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise RefusedInput(f"PhotometricInterpretation {photometric or 'missing'} is not grayscale")


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
    _check_codestream_complete(dataset)
    try:
        stored = dataset.pixel_array
    except Exception as error:  # decoders raise many types; all mean the same to us
        raise RefusedInput(
            f"pixel data could not be decoded ({type(error).__name__}: {error})"
        ) from error
    if stored.ndim != 2:
        raise RefusedInput(f"pixel data has shape {stored.shape}; expected one 2D frame")
    try:
        values = apply_modality_lut(stored, dataset)
        values = _apply_voi(np.asarray(values, dtype=np.float32), dataset)
    except Exception as error:
        raise RefusedInput(f"invalid Modality/VOI LUT ({type(error).__name__}: {error})") from error
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
    return header
