"""What batching studies into one forward pass per network could save the node: each
shipped network's forward time per image at batch 1 and at ``--batch``, beside one whole
analysis of a 2k CR (RG1_UNCR), all in the same run as the reference (one DenseNet121@224
forward, ``timing.reference_forward``).

Batching only speeds up the forward passes; the rest of an analysis (decoding, scaling,
post-processing at full size, measurements, heat maps) stays per image. So the saving per
study is at most the forward time saved, which this prints as a share of the analysis.

    .venv/bin/python benchmarks/node_batching.py [--batch 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from timing import DICOM_SAMPLES, median_time, reference_forward


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from cxr_core import Engine, read_radiograph

    engine = Engine()
    radiograph = read_radiograph(DICOM_SAMPLES / "RG1_UNCR.dcm")
    reference = reference_forward(args.runs)
    analysis_s = median_time(lambda: engine.analyze(radiograph), max(3, args.runs // 3), 1)
    rows = []
    with torch.inference_mode():
        for stage in engine.stages:
            size = stage.card.input_size
            for network in stage.networks:
                one = torch.rand(1, 1, *size)
                many = torch.rand(args.batch, 1, *size)
                single = median_time(lambda n=network, x=one: n(x), args.runs)
                batched = median_time(lambda n=network, x=many: n(x), args.runs) / args.batch
                rows.append({"stage": stage.name, "input": list(size), "batch1_ms": single * 1e3,
                             f"batch{args.batch}_per_image_ms": batched * 1e3,
                             "saved_ms": (single - batched) * 1e3})
    saved = sum(r["saved_ms"] for r in rows)
    forward = sum(r["batch1_ms"] for r in rows)
    report = {"threads": args.threads, "reference_ms": reference * 1e3,
              "analysis_ms": analysis_s * 1e3, "forward_batch1_ms": forward,
              "saved_per_image_ms": saved, "networks": rows}
    for row in rows:
        print(f"{row['stage']:<13} {str(row['input']):<11} batch 1 {row['batch1_ms']:6.1f} ms"
              f"  batch {args.batch} {row[f'batch{args.batch}_per_image_ms']:6.1f} ms/image")
    print(f"reference {reference * 1e3:.1f} ms; one analysis {analysis_s * 1e3:.0f} ms "
          f"({analysis_s / reference:.1f}x), of which forward passes {forward:.0f} ms; batch "
          f"{args.batch} saves {saved:.0f} ms per image ({saved / forward:.0%} of the "
          f"forwards, {saved * 1e-3 / analysis_s:.0%} of an analysis)")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
