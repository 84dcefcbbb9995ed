"""Memory bombs (red team F1), built small: a codestream whose own size lies, a declared
size past the budget, and a deflated dataset that inflates to hundreds of MiB."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pydicom
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from tests.node.node_helpers import CR_J2K_LOSSY, DX_NIH, SC_JPEG
from tests.node.node_malformed import fresh_copy


def _patch_codestream(dataset: pydicom.Dataset, marker: bytes, offset: int,
                      fields: bytes) -> None:
    """Overwrite bytes at ``offset`` after the first ``marker`` in the encapsulated pixel
    data (lengths unchanged, so the fragments stay valid)."""
    data = bytearray(dataset.PixelData)
    at = data.index(marker) + offset
    data[at:at + len(fields)] = fields
    dataset.PixelData = bytes(data)


def jpeg_sof_lie(folder: Path, side: int = 60000) -> Path:
    """The SIIM JPEG (Rows/Columns 1024) whose SOF0 says ``side`` x ``side``."""
    dataset = fresh_copy(SC_JPEG)
    _patch_codestream(dataset, b"\xff\xc0", 5, struct.pack(">HH", side, side))
    path = folder / "jpeg_sof_lie.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def j2k_siz_lie(folder: Path, side: int = 12000) -> Path:
    """The RG1 J2K CR (1955 x 1841) whose SIZ says ``side`` x ``side``."""
    dataset = fresh_copy(CR_J2K_LOSSY)
    _patch_codestream(dataset, b"\xff\x4f\xff\x51", 8, struct.pack(">II", side, side))
    path = folder / "j2k_siz_lie.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def declared_size_bomb(folder: Path, side: int = 60000) -> Path:
    """Rows = Columns = ``side`` over the NIH image's 1 MB of 8-bit pixels."""
    dataset = fresh_copy(DX_NIH)
    dataset.Rows = dataset.Columns = side
    path = folder / "declared_size_bomb.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def deflate_bomb(folder: Path, inflated_mb: int = 320) -> Path:
    """A Deflated Explicit VR LE file: the NIH header, then PixelData of ``inflated_mb``
    MiB of zeros, compressed chunk by chunk (never held in memory: ~0.3 MB on disk)."""
    dataset = fresh_copy(DX_NIH)
    del dataset.PixelData
    header = io.BytesIO()
    write_dataset(pydicom.filebase.DicomFileLike(header), dataset)  # type: ignore[arg-type]
    size = inflated_mb * 2**20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunks = [compressor.compress(header.getvalue()),
              compressor.compress(b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", size))]
    zeros = bytes(2**20)
    chunks += [compressor.compress(zeros) for _ in range(inflated_mb)]
    chunks.append(compressor.flush())
    meta = dataset.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = folder / "deflate_bomb.dcm"
    with path.open("wb") as handle:
        handle.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(pydicom.filebase.DicomFileLike(handle), meta)
        for chunk in chunks:
            handle.write(chunk)
    return path


def build_bombs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {"jpeg_sof_60000": jpeg_sof_lie(folder), "j2k_siz_12000": j2k_siz_lie(folder),
            "rows_columns_60000": declared_size_bomb(folder),
            "deflate_320mb": deflate_bomb(folder)}



def large_dataset(folder: Path, megabytes: int) -> Path:
    """The NIH image with a private OB element of ``megabytes`` MiB of zeros before its
    pixels, in explicit VR little endian, written without holding it in memory."""
    dataset = fresh_copy(DX_NIH)
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    pixels = dataset.PixelData
    del dataset.PixelData
    path = folder / "large_dataset.dcm"
    dataset.save_as(path, enforce_file_format=True)
    with path.open("ab") as handle:
        handle.write(struct.pack("<HH", 0x0009, 0x0010) + b"LO" + struct.pack("<H", 6)
                     + b"CXRFZ ")
        handle.write(struct.pack("<HH", 0x0009, 0x1000) + b"OB\x00\x00"
                     + struct.pack("<I", megabytes * 2**20))
        zeros = bytes(2**20)
        for _ in range(megabytes):
            handle.write(zeros)
        handle.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\x00\x00"
                     + struct.pack("<I", len(pixels)) + pixels)
    return path
