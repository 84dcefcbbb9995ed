"""One set of size limits for every reader: PNG, JPEG, TIFF and DICOM alike refuse images
outside 128..8192 px per side with a one-line reason, checked from the header before any
pixel is decoded (a 20000x20000 PNG used to exit 1 with Pillow's DecompressionBombError)."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from cxr_core.io import RefusedInput, read_radiograph
from cxr_core.io.limits import MAX_SIDE, MIN_SIDE
from tests.conftest import RG1_UNCR

CXR = [sys.executable, "-m", "cxr_core.cli"]


def _constant_png(path: Path, width: int, height: int) -> Path:
    """An 8-bit gray PNG of zeros, written row by row: a 20000x20000 image becomes a
    few hundred kB without ever holding its 400 MB of pixels in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte "None", then the pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
                     + chunk(b"IEND", b""))
    return path


def _noise(path: Path, rows: int, columns: int) -> Path:
    pixels = np.random.default_rng(0).integers(0, 255, (rows, columns), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_the_limits_are_the_dicom_ones() -> None:
    assert (MIN_SIDE, MAX_SIDE) == (128, 8192)


@pytest.mark.parametrize(("rows", "columns", "problem"), [
    (100, 100, "too small"), (127, 400, "too small"), (400, 127, "too small"),
    (130, MAX_SIDE + 1, "too large"), (MAX_SIDE + 1, 130, "too large")])
def test_image_outside_the_limits_is_refused(tmp_path: Path, rows: int, columns: int,
                                             problem: str) -> None:
    path = _noise(tmp_path / "image.png", rows, columns)
    with pytest.raises(RefusedInput, match=f"{rows}x{columns} px is {problem}"):
        read_radiograph(path)


@pytest.mark.parametrize(("rows", "columns"), [(MIN_SIDE, MIN_SIDE), (MIN_SIDE, MAX_SIDE)])
def test_image_on_the_limits_is_read(tmp_path: Path, rows: int, columns: int) -> None:
    assert read_radiograph(_noise(tmp_path / "image.png", rows, columns)).shape == (rows,
                                                                                     columns)


@pytest.mark.parametrize("suffix", [".jpg", ".tif", ".bmp"])
def test_other_image_formats_share_the_limits(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(RefusedInput, match="100x90 px is too small"):
        read_radiograph(_noise(tmp_path / f"small{suffix}", 100, 90))


def test_dicom_shares_the_limits(tmp_path: Path) -> None:
    dataset = pydicom.dcmread(RG1_UNCR)
    dataset.PixelData = np.ascontiguousarray(dataset.pixel_array[:100, :120]).tobytes()
    dataset.Rows, dataset.Columns = 100, 120
    path = tmp_path / "small.dcm"
    dataset.save_as(path)
    with pytest.raises(RefusedInput, match="100x120 px is too small"):
        read_radiograph(path)


def test_decompression_bomb_is_refused_without_decoding(tmp_path: Path) -> None:
    """Pillow raises DecompressionBombError on open above ~179 Mpx; it is a refusal, and
    nothing is decoded: the reading process stays far below the image's 400 MB."""
    path = _constant_png(tmp_path / "huge.png", 20000, 20000)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(RefusedInput, match="too large"):
        read_radiograph(path)
    # VmHWM, the peak of this process's own memory (ru_maxrss would carry over the
    # forking test process's peak, torch and all)
    code = ("import sys; from pathlib import Path\n"
            "from cxr_core.io import RefusedInput, read_radiograph\n"
            "try:\n    read_radiograph(sys.argv[1])\nexcept RefusedInput as error:\n"
            "    print(error)\n"
            "status = Path('/proc/self/status').read_text().splitlines()\n"
            "print(next(int(line.split()[1]) for line in status\n"
            "           if line.startswith('VmHWM')) // 1024)")
    result = subprocess.run([sys.executable, "-W", "error", "-c", code, str(path)],
                            capture_output=True, text=True, check=True, timeout=120)
    reason, peak_mb = result.stdout.splitlines()
    assert "too large" in reason and int(peak_mb) < 250, result.stdout


def test_image_pillow_only_warns_about_is_refused_quietly(tmp_path: Path) -> None:
    """10000x10000 is above Pillow's warning limit (~89 Mpx) but below its error: the
    size check refuses it, and no warning escapes (``-W error`` would make it raise)."""
    path = _constant_png(tmp_path / "large.png", 10000, 10000)
    code = ("import sys; from cxr_core.io import RefusedInput, read_radiograph\n"
            "try:\n    read_radiograph(sys.argv[1])\nexcept RefusedInput as error:\n"
            "    print(error)\n")
    result = subprocess.run([sys.executable, "-W", "error", "-c", code, str(path)],
                            capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == ("image 10000x10000 px is too large to analyse; "
                                     "expected 128..8192 px per side")
    assert result.stderr == ""


@pytest.mark.parametrize(("name", "size", "reason"), [
    ("huge.png", 20000, "too large to analyse"), ("small.png", 100, "too small to analyse")])
def test_cli_refuses_with_one_line_and_exit_2(tmp_path: Path, name: str, size: int,
                                              reason: str) -> None:
    path = _constant_png(tmp_path / name, size, size)
    result = subprocess.run([*CXR, "analyze", str(path), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            check=False, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"refused {name}: ") and reason in lines[0]
    assert not (tmp_path / "out" / path.stem).exists()


def test_memory_bombs_are_refused_before_decoding(tmp_path: Path) -> None:
    """Red team F1: codestreams whose SOF/SIZ size differs from Rows/Columns and a deflated
    dataset inflating past the budget are refused from their headers, in bounded memory."""
    from tests.node.node_bombs import deflate_bomb, j2k_siz_lie, jpeg_sof_lie

    expected = {jpeg_sof_lie: "codestream is 60000x60000", j2k_siz_lie: "codestream is 12000",
                deflate_bomb: "deflated dataset too large"}
    for build, reason in expected.items():
        with pytest.raises(RefusedInput, match=reason):
            read_radiograph(build(tmp_path))
