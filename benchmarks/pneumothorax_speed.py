"""Time the pneumothorax stage against its budget and against the lung stage.

The issue's budget: the pneumothorax stage adds at most 300 ms per image on 2 CPU cores.
Both stages are timed in the same run on the same images (a 1024x1024 SIIM DICOM and a
512x512 SIIM PNG), so the ratio to the lung stage carries across machines.

    .venv/bin/python benchmarks/pneumothorax_speed.py [--runs 20] [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from timing import SHARED, median_time

from cxr_core import Analysis, default_models_dir, read_radiograph
from cxr_core.measure import make_segment
from cxr_core.segmentation import Segmenter
from cxr_core.stages.pneumothorax import PneumothoraxStage

BUDGET_S = 0.300
INPUTS = (
    next((SHARED / "dicom_samples").glob("siim_*.dcm")),
    next((SHARED / "pneumothorax_siim_github" / "images").glob("siim_*.png")),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=default_models_dir())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lung = Segmenter.load(args.models_dir / "lung_seg")
    stage = PneumothoraxStage.load(args.models_dir)
    print(f"torch threads {torch.get_num_threads()}, median of {args.runs} runs after warm-up")
    print(f"{'input':<14} {'lung ms':>8} {'ptx ms':>8} {'ptx/budget':>11} {'ptx/lung':>9}")
    for path in INPUTS:
        radiograph = read_radiograph(path)
        masks = lung(radiograph.pixels).masks
        segments = {n: make_segment(n, m, radiograph.spacing) for n, m in masks.items()}

        def run_stage(radiograph=radiograph, segments=segments) -> None:
            stage.run(Analysis(radiograph=radiograph, segments=dict(segments)))

        with torch.inference_mode():
            lung_s = median_time(lambda r=radiograph: lung(r.pixels), args.runs)
            ptx_s = median_time(run_stage, args.runs)
        size = f"{radiograph.shape[0]}x{radiograph.shape[1]}"
        print(f"{size:<14} {lung_s * 1000:>8.1f} {ptx_s * 1000:>8.1f} "
              f"{ptx_s / BUDGET_S:>11.2f} {ptx_s / lung_s:>9.2f}")
        verdict = "within" if ptx_s <= BUDGET_S else "OVER"
        print(f"  pneumothorax stage: {ptx_s / BUDGET_S:.2f} x the {BUDGET_S * 1000:.0f} ms "
              f"budget ({verdict})")


if __name__ == "__main__":
    main()
