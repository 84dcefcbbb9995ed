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


def test_one_ahead_keeps_order_and_errors_and_works_one_item_ahead() -> None:
    """``cxr analyze`` analyses the next image while it writes this one: results come
    in input order, each failure with its own item, and no more than one item ahead."""
    import threading

    from cxr_core.cli.analyze import one_ahead

    started: list[int] = []
    main_thread = threading.get_ident()
    threads: set[int] = set()

    def work(item: int) -> int:
        started.append(item)
        threads.add(threading.get_ident())
        if item == 2:
            raise ValueError("item 2")
        return item * 10

    seen = []
    for index, (item, future) in enumerate(one_ahead(range(5), work)):
        assert item == index
        future.exception()  # wait for it: then at most the next one has started
        assert max(started) <= index + 1
        try:
            seen.append(future.result())
        except ValueError as error:
            seen.append(str(error))
    assert seen == [0, 10, "item 2", 30, 40]
    assert threads and main_thread not in threads
    started.clear()
    for item, _ in one_ahead(range(100), work):  # stopping early leaves the rest undone
        if item == 3:
            break
    assert max(started) <= 4


def test_analyze_of_several_files_equals_one_at_a_time(tmp_path: Path) -> None:
    """Analysed one ahead, three files give the same analyses as each alone."""
    import json

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    names = ["RG1_UNCR.dcm", *sorted(p.name for p in DICOM_SAMPLES.glob("nih_gcp_*.dcm"))[:1],
             *sorted(p.name for p in DICOM_SAMPLES.glob("siim_*.dcm"))[:1]]
    for name in names:
        shutil.copy(DICOM_SAMPLES / name, inputs / name)

    def summaries(out: Path) -> dict[str, dict]:
        result = {}
        for path in sorted(out.glob("*/analysis.json")):
            summary = json.loads(path.read_text())
            summary.pop("timings_s")  # how long it took: the one thing that may differ
            result[path.parent.name] = summary
        return result

    together = tmp_path / "together"
    subprocess.run([*CXR, "analyze", str(inputs), "--out", str(together)], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    alone = tmp_path / "alone"
    for name in names:
        subprocess.run([*CXR, "analyze", str(inputs / name), "--out", str(alone)], check=True,
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    assert len(summaries(together)) == len(names)
    assert summaries(together) == summaries(alone)
