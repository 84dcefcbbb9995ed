"""End-to-end latency of cxr-node: last instance acknowledged -> SEG and SR at the
destination (dcmtk storescp), quiet period subtracted; and the node's peak memory.

Studies are sent one at a time (one instance each), alternating the samples given. The
reference run, in this process, is the engine alone on the same files (read, analyse,
build SEG and SR): the ratio says what the node adds (spooling, jobs, DICOM network).

    .venv/bin/python benchmarks/node_latency.py [--studies 10] [--quiet-period 1]

Target: p95 <= 3 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from node_ingest import free_port, wait_port, wait_ready
from pydicom.uid import generate_uid
from timing import DICOM_SAMPLES

SAMPLES = DICOM_SAMPLES
DEFAULT_SAMPLES = [
    "nih_gcp_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm",
    "RG1_UNCR.dcm",
]


def new_study(source: Path, folder: Path) -> Path:
    dataset = pydicom.dcmread(source)
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def engine_alone(files: list[Path], models_dir: str | None) -> list[float]:
    from cxr_core import Engine, build_dicom_results, read_radiograph

    engine = Engine(models_dir=Path(models_dir) if models_dir else None)
    engine.analyze(read_radiograph(files[0]))  # warm-up, like the node's first study
    seconds = []
    for path in files:
        started = time.perf_counter()
        analysis = engine.analyze(read_radiograph(path))
        build_dicom_results(analysis.radiograph.source_dataset, analysis)
        seconds.append(time.perf_counter() - started)
    return seconds


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def through_node(files: list[Path], work: Path, quiet: float, models_dir: str | None
                 ) -> tuple[list[float], float]:
    received = work / "received"
    received.mkdir()
    dest_port, port, http = free_port(), free_port(), free_port()
    storescp = subprocess.Popen(["storescp", "-aet", "DEST", "-od", str(received), "+uf",
                                 str(dest_port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    command = [sys.executable, "-m", "dicom_node", "serve", "--ae-title", "CXRNODE",
               "--port", str(port), "--bind", "127.0.0.1", "--allow-ae", "PACS",
               "--destination", f"DEST@127.0.0.1:{dest_port}", "--storage",
               str(work / "storage"), "--quiet-period", str(quiet), "--http-port", str(http),
               "--log-level", "WARNING"]
    command += ["--models-dir", models_dir] if models_dir else []
    node = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latencies = []
    try:
        wait_port(dest_port)
        wait_port(port)
        wait_ready(http)
        for path in files:
            before = len(list(received.iterdir()))
            subprocess.run(["storescu", "-R", "-aet", "PACS", "-aec", "CXRNODE", "127.0.0.1",
                            str(port), str(path)], check=True, capture_output=True)
            acknowledged = time.perf_counter()
            deadline = acknowledged + 120
            while len(list(received.iterdir())) < before + 2:  # SEG and SR
                if time.perf_counter() > deadline:
                    raise RuntimeError("results did not arrive within 120 s")
                time.sleep(0.02)
            latencies.append(time.perf_counter() - acknowledged - quiet)
        peak = peak_rss_mb(node.pid)
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(60)
        storescp.terminate()
        storescp.wait(10)
    return latencies, peak


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--quiet-period", type=float, default=1.0)
    parser.add_argument("--samples", nargs="+", default=DEFAULT_SAMPLES,
                        help="file names in the shared samples folder, used in turn")
    parser.add_argument("--models-dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="node-latency-") as tmp:
        work = Path(tmp)
        (work / "inputs").mkdir()
        files = [new_study(SAMPLES / args.samples[i % len(args.samples)], work / "inputs")
                 for i in range(args.studies)]
        reference = engine_alone(files, args.models_dir)
        latencies, peak = through_node(files, work, args.quiet_period, args.models_dir)
    names = [args.samples[i % len(args.samples)] for i in range(args.studies)]
    print(f"{args.studies} single-image studies, quiet period {args.quiet_period} s subtracted")
    print(f"  node end-to-end, all studies: p50 {statistics.median(latencies):.2f} s  "
          f"p95 {percentile(latencies, 95):.2f} s  max {max(latencies):.2f} s")
    for name in sorted(set(names)):
        node = [t for t, n in zip(latencies, names, strict=True) if n == name]
        alone = [t for t, n in zip(reference, names, strict=True) if n == name]
        print(f"  {name[:44]:<44} node p50 {statistics.median(node):.2f} s, engine alone "
              f"p50 {statistics.median(alone):.2f} s, ratio "
              f"{statistics.median(node) / statistics.median(alone):.2f}x")
    print(f"node peak memory (VmHWM): {peak:.0f} MB")
    print(f"target p95 <= 3 s: {'met' if percentile(latencies, 95) <= 3 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
