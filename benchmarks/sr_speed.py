"""The TID 1500 SR build: pydicom-written tree against the former highdicom build, and both
against one DenseNet121@224 forward measured in the same run.

The former build (``tests/sr_highdicom_reference.py``, highdicom's template classes and
``ComprehensiveSR`` given the whole tree) is kept in the tests as the parity reference; it
is timed here beside the shipped one, on the same analysis, round after round. Each
round times the reference forward, then every build, ``--runs`` times each; the figures
are medians over rounds of each round's medians, with a 95% interval of the median over
rounds (order statistics, binomial), and ratios are taken within a round.

    .venv/bin/python benchmarks/sr_speed.py [--rounds 15] [--runs 7] [--threads 1]
        [--clock cpu|wall] [--input FILE]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from timing import DICOM_SAMPLES, median_time, reference_forward

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' reference
from cxr_core import DicomOptions, Engine, build_dicom_results, read_radiograph  # noqa: E402
from cxr_core.writers.sr import build_sr  # noqa: E402
from tests.sr_highdicom_reference import build_sr_highdicom  # noqa: E402

DEFAULT_INPUT = DICOM_SAMPLES / "RG1_UNCR.dcm"


def median_interval(values: list[float]) -> tuple[float, float]:
    """A 95% (at least) interval of the median from order statistics: the ranks the
    binomial(n, 1/2) puts 2.5% beyond on each side."""
    ordered = sorted(values)
    n = len(ordered)
    tail, rank = 0.0, 0
    while rank < n:
        mass = math.comb(n, rank) / 2 ** n
        if tail + mass > 0.025:
            break
        tail += mass
        rank += 1
    return ordered[max(rank - 1, 0)], ordered[min(n - rank, n - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    analysis = Engine().analyze(read_radiograph(args.input))
    source = analysis.radiograph.source_dataset
    seg = build_dicom_results(source, analysis, DicomOptions(heatmaps=False)).seg
    steps: dict[str, Callable[[], object]] = {
        "SR build (pydicom tree)": lambda: build_sr(source, analysis, seg=seg),
        "SR build (highdicom, former)": lambda: build_sr_highdicom(source, analysis, seg=seg),
    }
    seconds: dict[str, list[float]] = {"reference DenseNet121@224": []}
    ratios: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        reference = reference_forward(args.runs, clock=clock)
        seconds["reference DenseNet121@224"].append(reference)
        timed = {name: median_time(step, args.runs, clock=clock) for name, step in steps.items()}
        for name, value in timed.items():
            seconds.setdefault(name, []).append(value)
            ratios.setdefault(name, []).append(value / reference)
        speedup = timed["SR build (highdicom, former)"] / timed["SR build (pydicom tree)"]
        ratios.setdefault("speed-up (former / new)", []).append(speedup)

    print(f"input {args.input.name}, {args.rounds} rounds x {args.runs} runs, torch threads "
          f"{args.threads}, {args.clock} time, load average at start {os.getloadavg()[0]:.1f}")
    print("\n| step | median ms [95% CI] | x reference [95% CI] |\n|---|---:|---:|")
    for name, values in seconds.items():
        low, high = median_interval(values)
        ratio = ratios.get(name, [1.0] * len(values))
        ratio_low, ratio_high = median_interval(ratio)
        print(f"| {name} | {statistics.median(values) * 1000:.1f} [{low * 1000:.1f}, "
              f"{high * 1000:.1f}] | {statistics.median(ratio):.3f} [{ratio_low:.3f}, "
              f"{ratio_high:.3f}] |")
    speedups = ratios["speed-up (former / new)"]
    low, high = median_interval(speedups)
    print(f"\nspeed-up of the SR build: {statistics.median(speedups):.1f}x "
          f"[{low:.1f}, {high:.1f}]")


if __name__ == "__main__":
    main()
