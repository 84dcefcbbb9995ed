"""What the findings stage adds per image, against the 100 ms budget and the lung stage.

Times (median after warm-up) the lung segmentation, the findings probabilities, one
heat map, and the whole stage as the engine runs it, on a DICOM CR (2k) and an
NIH PNG (512 px), and prints each as a ratio of the budget and of the lung stage measured
in the same run.

    .venv/bin/python benchmarks/findings_speed.py [--runs 20]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from timing import SHARED, median_time

from cxr_core import Engine, read_radiograph
from cxr_core.measure import lung_union
from cxr_core.stages.findings import FindingsStage
from cxr_core.stages.lungs import LungStage

BUDGET_S = 0.100  # issue 12: the findings stage stays within 100 ms on 2 cores
INPUTS = (SHARED / "dicom_samples" / "RG1_UNCR.dcm",
          SHARED / "nih_cxr14_normal_pneumonia" / "images" / "nih_00000193_019.png")


def stage_timings(engine: Engine, stage: FindingsStage, path: Path,
                  runs: int) -> dict[str, float]:
    radiograph = read_radiograph(path)
    analysis = engine.analyze(radiograph)
    analysis.findings = []
    classifier = stage.classifier
    lungs = lung_union({name: s.mask for name, s in analysis.segments.items()})
    lung_stage = engine.stage("lungs")
    assert isinstance(lung_stage, LungStage)
    network_input = classifier.input(radiograph.pixels, lungs)

    def run_stage(positive: bool) -> None:
        copied = copy.copy(analysis)
        copied.findings, copied.quality_flags = [], list(analysis.quality_flags)
        classifier.thresholds = [0.0 if positive else 1.1] * len(classifier.thresholds)
        stage.run(copied)

    thresholds = list(classifier.thresholds)
    timings = {
        "lung stage (reference)": median_time(
            lambda: lung_stage.segmenter(radiograph.pixels), runs),
        "findings input": median_time(lambda: classifier.input(radiograph.pixels, lungs), runs),
        "findings probabilities": median_time(
            lambda: classifier.probabilities(network_input), runs),
        "one heat map": median_time(
            lambda: classifier.heatmap(network_input, 0, radiograph.shape), runs),
        "stage, all negative": median_time(lambda: run_stage(False), runs),
        "stage, all positive (worst)": median_time(lambda: run_stage(True), runs),
    }
    classifier.thresholds = thresholds
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    engine = Engine()
    stage = engine.stage("findings")
    assert isinstance(stage, FindingsStage)
    rules = stage.card.runtime.classifier
    print(f"torch threads: {torch.get_num_threads()}; model {stage.card.identifier} "
          f"({rules.input if rules else '?'}, input {stage.card.input_size})")
    for path in INPUTS:
        timings = stage_timings(engine, stage, path, args.runs)
        reference = timings["lung stage (reference)"]
        print(f"\n{path.name[:40]} ({read_radiograph(path).shape[0]} rows), "
              f"median of {args.runs} runs")
        print(f"{'step':<30} {'ms':>8} {'x 100 ms':>9} {'x lung':>8}")
        for name, seconds in timings.items():
            print(f"{name:<30} {seconds * 1000:>8.1f} {seconds / BUDGET_S:>9.2f} "
                  f"{seconds / reference:>8.2f}")


if __name__ == "__main__":
    main()
