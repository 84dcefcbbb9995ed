"""What the checks before the models cost per image: conditioning (padding found, frame
cropped, corners filled) and the chest gate (content, turns, mirroring), against the
30 ms budget and the lung stage.

Times (median after warm-up) on a DICOM CR (2k), an NIH PNG with a black frame (512 px)
and the same PNG with a 20 % frame added, each as a ratio of the budget and of the lung
stage measured in the same run.

    .venv/bin/python benchmarks/gate_speed.py [--runs 20]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from timing import SHARED, median_time

from cxr_core import Analysis, Engine, read_radiograph
from cxr_core.padding import condition, find_padding
from cxr_core.stages.gate import GateStage
from cxr_core.stages.lungs import LungStage

BUDGET_S = 0.030
FRAMED = SHARED / "nih_cxr14_normal_pneumonia" / "images" / "nih_00000061_015.png"
INPUTS = {"CR 1955x1841 (RG1_UNCR)": SHARED / "dicom_samples" / "RG1_UNCR.dcm",
          "NIH PNG 512 with a frame": FRAMED}


def _framed(pixels: np.ndarray) -> np.ndarray:
    rows, columns = (round(0.2 * s) for s in pixels.shape)
    out = np.full((pixels.shape[0] + 2 * rows, pixels.shape[1] + 2 * columns),
                  pixels.min(), dtype=np.float32)
    out[rows:-rows, columns:-columns] = pixels
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    engine = Engine()
    gate, lungs = engine.stage("gate"), engine.stage("lungs")
    assert isinstance(gate, GateStage) and isinstance(lungs, LungStage)
    images = {name: read_radiograph(path).pixels for name, path in INPUTS.items()}
    images["NIH PNG with 20 % frame added"] = _framed(images["NIH PNG 512 with a frame"])
    print(f"torch threads {torch.get_num_threads()}; gate {gate.card.identifier}; "
          f"median of {args.runs} runs after warm-up")
    print(f"{'input':<32} {'step':<26} {'ms':>7} {'x 30 ms':>8} {'x lung':>7}")
    for name, pixels in images.items():
        radiograph = read_radiograph(FRAMED)
        radiograph.pixels = condition(pixels)[0]  # the gate sees the conditioned image
        with torch.inference_mode():
            lung_s = median_time(lambda p=radiograph.pixels: lungs.segmenter(p), args.runs)
            steps = {
                "padding found": median_time(lambda p=pixels: find_padding(p), args.runs),
                "conditioning": median_time(lambda p=pixels: condition(p), args.runs),
                "gate stage": median_time(
                    lambda r=radiograph: gate.run(Analysis(radiograph=r)), args.runs),
            }
        steps["padding + gate"] = steps["conditioning"] + steps["gate stage"]
        for step, seconds in steps.items():
            print(f"{name:<32} {step:<26} {seconds * 1000:>7.1f} {seconds / BUDGET_S:>8.2f} "
                  f"{seconds / lung_s:>7.2f}")
        verdict = "within" if steps["padding + gate"] <= BUDGET_S else "OVER"
        print(f"{'':<32} {'lung stage (reference)':<26} {lung_s * 1000:>7.1f}   -> "
              f"padding + gate {verdict} the 30 ms budget")


if __name__ == "__main__":
    main()
