"""``cxr analyze`` as a user runs it: several inputs, refusals, exit codes, outputs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import DICOM_SAMPLES, RG1_UNCR

CXR = [sys.executable, "-m", "cxr_core.cli"]


def test_analyze_folder_refuses_bad_inputs_and_does_the_rest(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("RG1_UNCR.dcm", "RG3_J2KR.dcm"):
        shutil.copy(DICOM_SAMPLES / name, inputs / name)
    (inputs / "truncated.dcm").write_bytes(RG1_UNCR.read_bytes()[:300_000])
    out = tmp_path / "out"
    result = subprocess.run([*CXR, "analyze", str(inputs), "--out", str(out)],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            check=False, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    refusals = [line for line in result.stderr.splitlines() if line.startswith("refused")]
    assert len(refusals) == 2
    assert any("RG3_J2KR.dcm: not a chest radiograph" in line for line in refusals)
    produced = sorted(p.name for p in (out / "RG1_UNCR").iterdir())
    # heat maps at source resolution (PNGs, FRACTIONAL SEG) only when asked (--outputs)
    assert produced == sorted(["analysis.json", "masks", "overlay.png", "seg.dcm", "sr.dcm"])
    assert not (out / "RG3_J2KR").exists()


def test_analyze_single_file_succeeds(tmp_path: Path) -> None:
    result = subprocess.run([*CXR, "analyze", str(RG1_UNCR), "--out", str(tmp_path)],
                            capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "RG1_UNCR" / "seg.dcm").is_file()


def test_missing_input_is_refused_not_crashed(tmp_path: Path) -> None:
    result = subprocess.run([*CXR, "analyze", str(tmp_path / "nope.dcm"), "--out",
                             str(tmp_path)], capture_output=True, text=True, check=False,
                            timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_bad_pixel_spacing_is_refused_in_one_line(tmp_path: Path) -> None:
    for value, reason in (("abc", "give ROW_MM,COLUMN_MM"), ("0.2,0", "give ROW_MM,COLUMN_MM"),
                          ("0.2,0.2,guessed", "unknown source 'guessed'")):
        result = subprocess.run([*CXR, "analyze", str(RG1_UNCR), "--out", str(tmp_path),
                                 "--pixel-spacing", value], capture_output=True, text=True,
                                check=False, timeout=300)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert reason in result.stderr and len(result.stderr.splitlines()) == 1
        assert not any(tmp_path.iterdir())  # refused before anything was read or written
