"""The distributed node on this machine: throughput with 1, 2 and 4 worker processes, queue
latency against analysis time, and the broker's overhead per job.

Real RabbitMQ and PostgreSQL (Debian's packages) are started in a temporary folder, as
the tests do. One ingest node takes the studies (one NIH DX instance each, sent by dcmtk
storescu as fast as it acknowledges); W worker processes (one analysis thread each)
analyse and deliver to a dcmtk storescp.

* throughput: studies per minute from the first send to the last result delivered;
* queue latency: a study queued -> a worker starts it (store timestamps), beside the
  analysis time (started -> finished);
* broker overhead: publish + consume + acknowledge of a no-op Dramatiq message on the same
  broker, as a fraction of one study's analysis time (goal <= 2 %).

    .venv/bin/python benchmarks/node_scaleout.py [--studies 24] [--workers 1 2 4]

Writes ``benchmarks/results/node_scaleout.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.node.node_helpers import (  # noqa: E402  (the tests' real-process helpers)
    DEST_AE,
    DX_NIH,
    NodeProcess,
    Storescp,
    copy_with_new_uids,
    storescu,
    wait_for,
)
from tests.node.services import Postgres, RabbitMQ  # noqa: E402


def broker_overhead_s(url: str, messages: int = 200) -> float:
    """Seconds per message: publish (with confirm), consume, run a no-op, acknowledge."""
    import dramatiq

    from dicom_node.distributed import make_broker

    broker = make_broker(url)
    done = threading.Event()
    seen: list[int] = []

    @dramatiq.actor(broker=broker, queue_name="cxr-bench-noop")
    def noop(index: int) -> None:
        seen.append(index)
        if len(seen) == messages:
            done.set()

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    started = time.perf_counter()
    for index in range(messages):
        noop.send(index)
    done.wait(300)
    elapsed = time.perf_counter() - started
    worker.stop()
    broker.close()
    return elapsed / messages


def run_cluster(root: Path, rabbitmq: RabbitMQ, postgres: Postgres, workers: int,
                studies: int) -> dict[str, float]:
    destination = Storescp(root / "destination").start()
    jobs = f'broker = "{rabbitmq.url}"\nstore = "{postgres.new_database()}"'
    storage = root / "spool"

    def node(name: str, role: str) -> NodeProcess:
        return NodeProcess(root / name, storage=storage, quiet_period=0.5,
                           destinations=[("pacs", DEST_AE, destination.port)],
                           node_keys=f'role = "{role}"', jobs_keys=jobs)
    ingest = node("ingest", "ingest")
    nodes = [ingest, *(node(f"worker{i}", "worker") for i in range(workers))]
    try:
        for process in nodes:
            process.start(timeout=180)
        time.sleep(5.0)  # the workers' engines load before their consumers start
        files = [copy_with_new_uids(DX_NIH, root / "studies") for _ in range(studies)]
        started = time.monotonic()
        for path in files:
            assert storescu([path], ingest.port).returncode == 0
        wait_for(lambda: len(destination.received()) >= 2 * studies, 900,
                 "every study delivered", interval=0.5)
        elapsed = time.monotonic() - started
        rows = ingest.query("SELECT queued_at, job_started, job_finished FROM studies")
    finally:
        for process in nodes:
            process.stop()
        destination.stop()
    waits = [r[1] - r[0] for r in rows if r[0] and r[1]]
    analyses = [r[2] - r[1] for r in rows if r[1] and r[2]]
    return {"workers": workers, "studies": studies, "seconds": round(elapsed, 1),
            "studies_per_minute": round(60 * studies / elapsed, 1),
            "queue_latency_median_s": round(statistics.median(waits), 2),
            "queue_latency_p95_s": round(sorted(waits)[int(0.95 * (len(waits) - 1))], 2),
            "analysis_median_s": round(statistics.median(analyses), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cxr-scaleout-") as folder:
        root = Path(folder)
        rabbitmq = RabbitMQ(root / "rabbitmq").start()
        postgres = Postgres(root / "postgres").start()
        try:
            overhead = broker_overhead_s(rabbitmq.url)
            runs = [run_cluster(root / f"w{w}", rabbitmq, postgres, w, args.studies)
                    for w in args.workers]
        finally:
            postgres.stop()
            rabbitmq.stop()
    analysis = statistics.median(r["analysis_median_s"] for r in runs)
    report = {
        "broker_overhead_ms_per_job": round(1000 * overhead, 2),
        "broker_overhead_fraction_of_analysis": round(overhead / analysis, 4),
        "runs": runs,
        "scaling_vs_1_worker": {r["workers"]: round(r["studies_per_minute"] /
                                                    runs[0]["studies_per_minute"], 2)
                                for r in runs},
    }
    out = REPO / "benchmarks" / "results" / "node_scaleout.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
