"""Per-stage timings of one analysis of RG1_UNCR.dcm, and start-up, on this machine.

Prints medians after warm-up and each stage as a ratio of the 0.5 s per-image budget and
of the bare network forward pass measured in the same run (the reference), so figures
from different machines can be compared.

    .venv/bin/python benchmarks/analyze_speed.py [--runs 20] [--input FILE]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()
import argparse  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from timing import DICOM_SAMPLES, median_time  # noqa: E402

from cxr_core import Engine, build_dicom_results, read_radiograph  # noqa: E402
from cxr_core.stages.lungs import LungStage  # noqa: E402
from cxr_core.writers.seg import build_seg  # noqa: E402
from cxr_core.writers.sr import build_sr  # noqa: E402

IMPORTED = time.perf_counter()
BUDGET_S = 0.5
DEFAULT_INPUT = DICOM_SAMPLES / "RG1_UNCR.dcm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    args = parser.parse_args()

    engine = Engine()
    loaded = time.perf_counter()
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"start-up: import {IMPORTED - STARTED:.2f} s, model load {loaded - IMPORTED:.2f} s")

    radiograph = read_radiograph(args.input)
    source = radiograph.source_dataset
    lungs = engine.stage("lungs")
    assert isinstance(lungs, LungStage)
    segmenter = lungs.segmenter
    model_input = segmenter.to_input(radiograph.pixels)
    analysis = engine.analyze(radiograph)
    masks = {name: segment.mask for name, segment in analysis.segments.items()}
    seg = build_dicom_results(source, analysis).seg
    stages: dict[str, Callable[[], object]] = {
        "read": lambda: read_radiograph(args.input),
        "preprocess": lambda: segmenter.to_input(radiograph.pixels),
        "inference": lambda: segmenter.network(model_input),
        "segment (pre+inference+post)": lambda: segmenter(radiograph.pixels),
        "analyze (all engine stages)": lambda: engine.analyze(radiograph),
        "SEG": lambda: build_seg(source, masks, spacing=radiograph.spacing,
                                 algorithm=analysis.algorithm),
        "SR": lambda: build_sr(source, analysis, seg=seg),
    }
    with torch.inference_mode():
        times = {name: median_time(function, args.runs) for name, function in stages.items()}
    with tempfile.TemporaryDirectory() as folder:
        save = Path(folder) / "seg.dcm"
        times["SEG+SR save"] = median_time(
            lambda: (seg.save_as(save), build_sr(source, analysis, seg=seg).save_as(save)),
            args.runs)

    reference = times["inference"]
    total = (times["read"] + times["analyze (all engine stages)"] + times["SEG"] + times["SR"])
    print(f"input {args.input.name} {radiograph.shape[0]}x{radiograph.shape[1]}, "
          f"median of {args.runs} runs after warm-up")
    print(f"{'stage':<30} {'median ms':>10} {'x budget':>9} {'x inference':>12}")
    for name, seconds in {**times, "TOTAL read+analyze+SEG+SR": total}.items():
        print(f"{name:<30} {seconds * 1000:>10.1f} {seconds / BUDGET_S:>9.2f} "
              f"{seconds / reference:>12.1f}")
    verdict = "within" if total <= BUDGET_S else "OVER"
    print(f"one analysis: {total:.3f} s = {total / BUDGET_S:.2f} x the {BUDGET_S} s budget "
          f"({verdict})")


if __name__ == "__main__":
    main()
