"""What one 2k CR costs through ``cxr analyze``, against one DenseNet121@224 forward.

The reference is MONAI's DenseNet121 (1 input channel, 18 outputs: what torchxrayvision
and CheXNet run) at 224x224, batch 1, measured in this run between the other
measurements. Every figure is a median; ratios are medians over rounds of (step /
reference of that round).

On a shared, busy machine wall times of multi-threaded torch collapse (threads wait for
each other) while single-threaded Python merely slows, so wall ratios there mean
little: ``--threads 1 --clock cpu`` times CPU seconds of one thread everywhere (torch,
and the ``cxr`` subprocesses through ``OMP_NUM_THREADS``), which contention barely
moves.

1. Per step, in this process: read, each engine stage, each output file (built and
   written), and the in-process total (read + analyze + SEG + SR).
2. The command, in subprocesses: start-up plus one file (wall), and the marginal time per
   extra file (``N+1`` copies of the input against one), with its peak RSS.

    .venv/bin/python benchmarks/command_speed.py [--rounds 5] [--extra 10] [--write FILE]
        [--threads 2] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from timing import DICOM_SAMPLES, median_time, reference_forward

from cxr_core import Engine, read_radiograph
from cxr_core.writers import files as output_files
from cxr_core.writers.dicom import build_dicom_results
from cxr_core.writers.heatmap_seg import build_heatmap_seg, mapped_findings
from cxr_core.writers.overlay import render_overlay
from cxr_core.writers.seg import build_seg
from cxr_core.writers.sr import build_sr

DEFAULT_INPUT = DICOM_SAMPLES / "RG1_UNCR.dcm"
CXR = Path(sys.executable).parent / "cxr"
TIME = shutil.which("time", path="/usr/bin:/bin") or "/usr/bin/time"
"""GNU time (``apt-get install time``): the command's peak RSS and CPU seconds."""
COMMAND_TARGET, ENGINE_TARGET, STARTUP_TARGET_S, RSS_TARGET_MB = 4.0, 2.5, 2.5, 600
CLOCK: list[Callable[[], float]] = [time.perf_counter]
"""The clock every step is timed on (``--clock``)."""
THREADS = [2]
"""Torch threads here and in the ``cxr`` subprocesses (``--threads``)."""


def step_functions(engine: Engine, path: Path, out: Path) -> dict[str, Callable[[], object]]:
    """Every step of one analysis and its outputs, each runnable on its own."""
    radiograph = read_radiograph(path)
    analysis = engine.analyze(radiograph)
    source = analysis.radiograph.source_dataset
    masks = {name: s.mask for name, s in analysis.segments.items()}
    seg = build_seg(source, masks, spacing=radiograph.spacing, algorithm=analysis.algorithm)
    steps: dict[str, Callable[[], object]] = {
        "read": lambda: read_radiograph(path),
        "analyze (all stages)": lambda: engine.analyze(radiograph),
        "SEG build": lambda: build_seg(source, masks, spacing=radiograph.spacing,
                                       algorithm=analysis.algorithm),
        "SR build": lambda: build_sr(source, analysis, seg=seg),
    }
    if mapped_findings(analysis.findings):
        steps["heat-map SEG build"] = lambda: build_heatmap_seg(
            source, analysis.findings, spacing=radiograph.spacing,
            algorithm=analysis.algorithm)
    steps["DICOM results (all, built)"] = lambda: build_dicom_results(source, analysis)
    sr = build_sr(source, analysis, seg=seg)
    steps["SR file written"] = lambda: sr.save_as(out / "sr.dcm", enforce_file_format=True)
    steps["overlay drawn"] = lambda: render_overlay(analysis)
    steps["mask PNGs written"] = lambda: output_files._write_masks(analysis, out)
    steps["write_outputs (default files)"] = lambda: output_files.write_outputs(analysis, out)
    return steps


def stage_seconds(engine: Engine, path: Path, runs: int) -> dict[str, float]:
    """Median of each stage's time over ``runs`` analyses, on :data:`CLOCK`."""
    radiograph = read_radiograph(path)
    samples: dict[str, list[float]] = {}
    for stage in engine.stages:  # time each stage on CLOCK, as the engine runs it
        run = stage.run

        def timed_run(analysis: object, run: Callable[[object], None] = run,
                      name: str = stage.name) -> None:
            started = CLOCK[0]()
            run(analysis)
            samples.setdefault(name, []).append(CLOCK[0]() - started)
        stage.run = timed_run  # type: ignore[method-assign]
    try:
        for _ in range(runs + 2):
            engine.analyze(radiograph)
    finally:
        for stage in engine.stages:
            del stage.run  # type: ignore[method-assign]
    return {f"stage {name}": statistics.median(values[2:]) for name, values in samples.items()}


def in_process(path: Path, rounds: int, runs: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds and median ratio to the reference of every in-process step."""
    engine = Engine()
    seconds: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        steps = step_functions(engine, path, Path(folder))
        for _ in range(rounds):
            reference = reference_forward(runs, clock=CLOCK[0])
            timed = stage_seconds(engine, path, runs)
            timed |= {name: median_time(function, runs, clock=CLOCK[0])
                      for name, function in steps.items()}
            timed["TOTAL read+analyze+SEG+SR"] = (timed["read"] + timed["analyze (all stages)"]
                                                 + timed["SEG build"] + timed["SR build"])
            timed["reference DenseNet121@224"] = reference
            for name, value in timed.items():
                seconds.setdefault(name, []).append(value)
                ratios.setdefault(name, []).append(value / reference)
    return ({k: statistics.median(v) for k, v in seconds.items()},
            {k: statistics.median(v) for k, v in ratios.items()})


def run_command(inputs: list[Path], out: Path) -> tuple[float, float]:
    """Seconds (wall, or CPU with ``--clock cpu``) and peak RSS (MB) of ``cxr analyze``
    on ``inputs``.

    GNU time runs it: a child forked from this (large) process would count this
    process's pages in its peak RSS until it execs; GNU time's own child is small.
    """
    report = out.with_suffix(".time")
    started = time.perf_counter()
    subprocess.run([TIME, "-o", str(report), "-f", "%M %U %S", str(CXR), "analyze",
                    *map(str, inputs), "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=os.environ | {"OMP_NUM_THREADS": str(THREADS[0])})
    wall = time.perf_counter() - started
    peak_kb, user, system = report.read_text().split()[-3:]
    seconds = float(user) + float(system) if CLOCK[0] is time.process_time else wall
    return seconds, int(peak_kb) / 1024


def command(path: Path, rounds: int, extra: int, runs: int) -> dict[str, list[float]]:
    """Start-up + one file, marginal seconds per extra file, peak RSS, and the reference,
    per round."""
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        copies = []
        for index in range(extra + 1):
            copy = Path(folder) / "in" / f"{index:02d}" / path.name
            copy.parent.mkdir(parents=True)
            shutil.copy(path, copy)
            copies.append(copy)
        for round_index in range(rounds):
            reference = reference_forward(runs, clock=CLOCK[0])
            one, rss_one = run_command(copies[:1], Path(folder) / f"one{round_index}")
            many, _ = run_command(copies, Path(folder) / f"many{round_index}")
            marginal = (many - one) / extra
            for name, value in {"reference": reference, "one file": one, "marginal": marginal,
                                "marginal ratio": marginal / reference,
                                "peak RSS one file": rss_one}.items():
                results.setdefault(name, []).append(value)
    return results


def table(seconds: dict[str, float], ratios: dict[str, float]) -> list[str]:
    lines = ["| step | median ms | x DenseNet121@224 |", "|---|---:|---:|"]
    lines += [f"| {name} | {seconds[name] * 1000:.1f} | {ratios[name]:.2f} |"
              for name in seconds]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=7, help="timed calls per step and round")
    parser.add_argument("--extra", type=int, default=10, help="extra files for the marginal")
    parser.add_argument("--skip-command", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or CPU time (use with --threads 1 on a busy machine)")
    parser.add_argument("--write", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    THREADS[0] = args.threads
    CLOCK[0] = time.process_time if args.clock == "cpu" else time.perf_counter
    import cxr_core

    lines = [f"input {args.input.name}, torch threads {torch.get_num_threads()}, "
             f"{args.rounds} rounds x {args.runs} runs, code {Path(cxr_core.__file__).parent}, "
             f"{args.clock} time, load average at start {os.getloadavg()[0]:.1f}", ""]
    seconds, ratios = in_process(args.input, args.rounds, args.runs)
    lines += table(seconds, ratios)
    total = ratios["TOTAL read+analyze+SEG+SR"]
    lines += ["", f"engine in-process total: {total:.2f}x the reference "
              f"(target <= {ENGINE_TARGET}x)"]
    if not args.skip_command:
        results = command(args.input, args.rounds, args.extra, args.runs)
        median = {name: statistics.median(values) for name, values in results.items()}
        lines += [
            "", f"`cxr analyze`, {args.rounds} rounds (median, all rounds):",
            f"- marginal per extra file: {median['marginal'] * 1000:.0f} ms = "
            f"{median['marginal ratio']:.2f}x the reference (target <= {COMMAND_TARGET}x); "
            f"rounds {', '.join(f'{r:.2f}' for r in results['marginal ratio'])}",
            f"- start-up + one file: {median['one file']:.2f} s {args.clock} (target <= "
            f"{STARTUP_TARGET_S} s); rounds {', '.join(f'{s:.2f}' for s in results['one file'])}",
            f"- peak RSS, one file: {median['peak RSS one file']:.0f} MB "
            f"(target <= {RSS_TARGET_MB} MB)",
            f"- reference in these rounds: {median['reference'] * 1000:.1f} ms"]
    print("\n".join(lines))
    if args.write:
        args.write.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
