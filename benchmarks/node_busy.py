"""Ingest rate of cxr-node while it analyses, against dcmtk storescp, and the node's
peak memory (whole process tree) while it ingests and analyses 2k x 2k CRs.

Inputs: copies of RG1_UNCR (CR 1955x1841, 16 bit, 7.2 MB) with new UIDs, one study
each. Each repeat, interleaved:

* ``storescp+sync``: storescu sends ``--files`` copies to storescp ``-xcr 'sync #p/#f'
  -xs`` (fsync per file, after the response: see node_ingest.py);
* ``cxr-node, analysing``: the node (quiet period 0.5 s, one worker, a storescp
  destination) first receives ``--busy`` studies and starts analysing them; once the
  first is analysed, storescu sends the ``--files`` copies, timed as above, while the
  worker analyses. The node then analyses everything it received and sends the results.

Memory: the RSS of the node and all its descendants, summed and sampled every 20 ms
from its start until everything is analysed and sent; also the kernel's peak (VmHWM)
of the node process. Budget (issue 14): <= 1.5 GiB for the whole node on 2k x 2k CRs.

    .venv/bin/python benchmarks/node_busy.py [--files 20] [--busy 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from node_ingest import free_port, run_storescp, send, wait_port, wait_ready
from pydicom import dcmread
from pydicom.uid import generate_uid
from timing import DICOM_SAMPLES

CR = DICOM_SAMPLES / "RG1_UNCR.dcm"
BUDGET_MB = 1536.0


def make_studies(folder: Path, count: int) -> list[Path]:
    """``count`` copies of the CR, each a new instance in a new study."""
    folder.mkdir(parents=True)
    files = []
    for i in range(count):
        dataset = dcmread(CR)
        dataset.StudyInstanceUID = generate_uid()
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        files.append(folder / f"{i:04d}.dcm")
        dataset.save_as(files[-1], enforce_file_format=True)
    return files


def tree_rss_mb(root: int) -> float:
    """Summed VmRSS of ``root`` and its descendants (0 once it is gone)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(children)
        frontier += children
    return sum(_status_kb(pid, "VmRSS:") for pid in tree) / 1024


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakSampler(threading.Thread):
    """Samples a process tree's RSS until stopped; ``peak_mb`` is the largest sum."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.peak_mb = 0.0
        self.hwm_mb = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))
            self.hwm_mb = max(self.hwm_mb, _status_kb(self.pid, "VmHWM:") / 1024)


def _count(database: Path, sql: str) -> int:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        return int(db.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def run_node_busy(busy: list[Path], files: list[Path], work: Path) -> dict[str, float]:
    """Ingest seconds of ``files`` while the node analyses ``busy``; peak memory."""
    storage, received = Path(tempfile.mkdtemp(dir=work)), Path(tempfile.mkdtemp(dir=work))
    port, http, dest = free_port(), free_port(), free_port()
    destination = subprocess.Popen(["storescp", "-aet", "DEST", "-od", str(received), "+uf",
                                    str(dest)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    node = subprocess.Popen(
        [sys.executable, "-m", "dicom_node", "serve", "--ae-title", "CXRNODE", "--port",
         str(port), "--bind", "127.0.0.1", "--allow-ae", "PACS", "--storage", str(storage),
         "--quiet-period", "0.5", "--http-port", str(http), "--log-level", "WARNING",
         "--destination", f"DEST@127.0.0.1:{dest}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sampler = PeakSampler(node.pid)
    sampler.start()
    database = storage / "node.sqlite"
    processed = "SELECT COUNT(*) FROM instances WHERE state != 'received'"
    try:
        wait_port(port)
        wait_ready(http)
        send(busy, port, "CXRNODE")
        _wait(lambda: _count(database, processed) >= 1, 300, "the first analysis")
        analysing = _count(database, processed) < len(busy)
        seconds = send(files, port, "CXRNODE")
        still = _count(database, processed) < len(busy) + len(files)
        _wait(lambda: _count(database, processed) == len(busy) + len(files), 1800,
              "every analysis")
        _wait(lambda: _count(database, "SELECT COUNT(*) FROM deliveries WHERE state = "
                                       "'pending'") == 0, 300, "every delivery")
        outcome = {row: _count(database, f"SELECT COUNT(*) FROM instances WHERE state = "
                                         f"'{row}'") for row in ("processed", "failed")}
    finally:
        sampler.done.set()
        sampler.join()
        node.send_signal(signal.SIGTERM)
        node.wait(60)
        destination.terminate()
        destination.wait(10)
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(received, ignore_errors=True)
    if not (analysing and still):
        raise RuntimeError("the ingest was not timed while the node analysed")
    return {"seconds": seconds, "peak_tree_mb": sampler.peak_mb, "vmhwm_mb": sampler.hwm_mb,
            **{f"{k}_instances": float(v) for k, v in outcome.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--busy", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="node-busy-") as tmp:
        work = Path(tmp)
        files = make_studies(work / "inputs", args.files)
        megabytes = sum(f.stat().st_size for f in files) / 2**20
        reference: list[float] = []
        runs: list[dict[str, float]] = []
        for repeat in range(args.repeats):  # interleaved, so load changes hit both
            reference.append(run_storescp(files, work, sync=True))
            busy = make_studies(work / f"busy{repeat}", args.busy)
            runs.append(run_node_busy(busy, files, work))
    node_s = statistics.median(r["seconds"] for r in runs)
    ref_s = statistics.median(reference)
    peak = max(r["peak_tree_mb"] for r in runs)
    print(f"{args.files} CR instances ({megabytes:.0f} MB) per run, {args.repeats} runs")
    print(f"  storescp+sync          {args.files / ref_s:6.1f} files/s  "
          f"({', '.join(f'{t:.2f}' for t in reference)} s)")
    node_times = ", ".join(f"{r['seconds']:.2f}" for r in runs)
    print(f"  cxr-node, analysing    {args.files / node_s:6.1f} files/s  ({node_times} s)")
    print(f"ratio cxr-node analysing / storescp+sync: {ref_s / node_s:.2f}x (target >= 1.0)")
    peaks = ", ".join(f"{r['peak_tree_mb']:.0f}" for r in runs)
    print(f"node peak RSS, whole process tree: {peak:.0f} MB (runs: {peaks}); VmHWM "
          f"{max(r['vmhwm_mb'] for r in runs):.0f} MB; budget {BUDGET_MB:.0f} MB: "
          f"{'met' if peak <= BUDGET_MB else 'NOT met'}")
    print(json.dumps({"reference_s": reference, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
