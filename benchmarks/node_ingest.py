"""Ingest rate of cxr-node against dcmtk storescp under the same storescu load.

What each receiver syncs, and when:

* cxr-node fsyncs every file, renames it into the spool and fsyncs the folder *before* the
  C-STORE response (checked with strace: fsync, rename, fsync(dir), then the response).
* storescp has no fsync option. ``-xcr 'sync #p/#f' -xs`` runs ``sync FILE`` (an fsync of
  the file, not of its folder) synchronously, but *after* that instance's C-STORE response
  has been sent: it delays the next instance, not the acknowledgement of its own (red team
  2026-11-29: with ``-xcr 'sleep 2' -xs`` round trips were 0.10, 2.02, 2.01 s). So
  "storescp+sync" pays a comparable fsync cost per instance but is *not*
  fsync-before-Success; only the node is.
* storescp without any sync is reported too, as an upper bound.

The node runs with a quiet period far longer than the benchmark, so only receiving is
measured (no analysis competes), and only after its engine finished loading.

    .venv/bin/python benchmarks/node_ingest.py [--files 40] [--repeats 3]

Target: node >= 0.8x storescp+sync (an fsync per instance for both; before the response
only for the node).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from timing import DICOM_SAMPLES

SAMPLES = {"nih": next(DICOM_SAMPLES.glob("nih_gcp_*.dcm")),  # DX 1024², 8 bit, 1 MB
           "cr": DICOM_SAMPLES / "RG1_UNCR.dcm"}                # CR 1955x1841, 7.2 MB
SAMPLE = SAMPLES["nih"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def make_inputs(folder: Path, count: int) -> list[Path]:
    """``count`` copies of the sample as new instances in a few studies."""
    folder.mkdir(parents=True)
    studies = [generate_uid() for _ in range(max(1, count // 10))]
    files = []
    for i in range(count):
        dataset = pydicom.dcmread(SAMPLE)
        dataset.StudyInstanceUID = studies[i % len(studies)]
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        files.append(folder / f"{i:04d}.dcm")
        dataset.save_as(files[-1], enforce_file_format=True)
    return files


def send(files: list[Path], port: int, called: str) -> float:
    started = time.perf_counter()
    result = subprocess.run(["storescu", "-aet", "PACS", "-aec", called, "127.0.0.1",
                             str(port), *map(str, files)], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stderr[-500:]}")
    return elapsed


def run_storescp(files: list[Path], work: Path, *, sync: bool) -> float:
    out = Path(tempfile.mkdtemp(dir=work))
    port = free_port()
    command = ["storescp", "-aet", "REF", "-od", str(out), "+uf", str(port)]
    if sync:
        command[1:1] = ["-xcr", "sync #p/#f", "-xs"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        return send(files, port, "REF")
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(out, ignore_errors=True)


def run_node(files: list[Path], work: Path, models_dir: str | None) -> float:
    storage = Path(tempfile.mkdtemp(dir=work))
    port, http = free_port(), free_port()
    command = [sys.executable, "-m", "dicom_node", "serve", "--ae-title", "CXRNODE",
               "--port", str(port), "--bind", "127.0.0.1", "--allow-ae", "PACS",
               "--storage", str(storage), "--quiet-period", "3600", "--http-port", str(http),
               "--log-level", "WARNING"]
    command += ["--models-dir", models_dir] if models_dir else []
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        wait_ready(http)
        return send(files, port, "CXRNODE")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        shutil.rmtree(storage, ignore_errors=True)


def wait_ready(http_port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz") as reply:
                if b'"engine": "ready"' in reply.read():
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the node's engine did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--sample", choices=sorted(SAMPLES), default="nih")
    args = parser.parse_args()
    global SAMPLE
    SAMPLE = SAMPLES[args.sample]
    with tempfile.TemporaryDirectory(prefix="node-ingest-") as tmp:
        work = Path(tmp)
        files = make_inputs(work / "inputs", args.files)
        megabytes = sum(f.stat().st_size for f in files) / 2**20
        times: dict[str, list[float]] = {"storescp+sync": [], "storescp (no sync)": [],
                                         "cxr-node": []}
        for _ in range(args.repeats):  # interleaved, so load changes hit all alike
            times["storescp+sync"].append(run_storescp(files, work, sync=True))
            times["storescp (no sync)"].append(run_storescp(files, work, sync=False))
            times["cxr-node"].append(run_node(files, work, args.models_dir))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.files} instances, {megabytes:.1f} MB, median of {args.repeats} runs")
    for name, seconds in median.items():
        print(f"  {name:<20} {args.files / seconds:7.1f} files/s  {megabytes / seconds:7.1f} MB/s"
              f"  ({', '.join(f'{t:.2f}' for t in times[name])} s)")
    ratio = median["storescp+sync"] / median["cxr-node"]
    print(f"ratio cxr-node / storescp+sync: {ratio:.2f}x  (target >= 0.80)")
    print(f"ratio cxr-node / storescp without sync: "
          f"{median['storescp (no sync)'] / median['cxr-node']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
