"""Many processes, one broker, one store: 2 ingest nodes and 3 workers on real RabbitMQ
and PostgreSQL (Debian's packages, started here), 60 studies from dcmtk storescu, random
kill -9 of ingest and worker processes and a broker restart while jobs are queued. Every
study acknowledged by an ingest node must reach the storescp destination, each result
once. The figures go to ``test-artifacts/distributed.json``."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicom_node.store_leases import WORKER_LEASE_S
from tests.conftest import REPO
from tests.node.node_helpers import (
    DEST_AE,
    DX_NIH,
    NodeProcess,
    Storescp,
    copy_with_new_uids,
    storescu,
    wait_for,
)
from tests.node.services import Postgres, RabbitMQ

STUDIES = 60
KILLS = 5
SEED = 1729
ARTIFACTS = Path(os.environ.get("CXR_TEST_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    server = RabbitMQ(tmp_path_factory.mktemp("rabbitmq")).start()
    try:
        yield server
    finally:
        server.stop()


class Cluster:
    """Ingest and worker processes sharing one spool folder, broker and store."""

    def __init__(self, root: Path, *, broker: str, store: str, destination: Storescp) -> None:
        self.root = root
        self.storage = root / "shared-spool"
        jobs = f'broker = "{broker}"\nstore = "{store}"'
        self.ingest = [self._node(f"ingest{i}", "ingest", jobs, destination) for i in range(2)]
        self.workers = [self._node(f"worker{i}", "worker", jobs, destination)
                        for i in range(3)]

    def _node(self, name: str, role: str, jobs: str, destination: Storescp) -> NodeProcess:
        return NodeProcess(self.root / name, storage=self.storage, quiet_period=0.5,
                           destinations=[("pacs", DEST_AE, destination.port)],
                           node_keys=f'role = "{role}"', jobs_keys=jobs)

    @property
    def processes(self) -> list[NodeProcess]:
        return [*self.ingest, *self.workers]

    def start(self) -> None:
        for process in self.processes:
            process.start(timeout=120)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


def _send_all(cluster: Cluster, files: list[Path], acknowledged: dict[str, str],
              done: threading.Event) -> None:
    """Like a PACS: each study to an ingest node in turn; a failure (that node was just
    killed) is retried on the other one until acknowledged."""
    for index, path in enumerate(files):
        target = index % 2
        while True:
            node = cluster.ingest[target]
            if node.process is not None and node.process.poll() is None and \
                    storescu([path], node.port).returncode == 0:
                acknowledged[path.stem] = node.root.name
                break
            target = 1 - target
            time.sleep(0.5)
        time.sleep(0.2)
    done.set()


def _kill_and_restart(node: NodeProcess) -> None:
    node.kill9()
    time.sleep(1.0)
    node.start(timeout=180)


def test_two_ingest_three_workers_survive_kills_and_a_broker_restart(
        tmp_path: Path, rabbitmq: RabbitMQ, postgres: Postgres) -> None:
    destination = Storescp(tmp_path / "destination").start()
    cluster = Cluster(tmp_path, broker=rabbitmq.url, store=postgres.new_database(),
                      destination=destination)
    figures: dict[str, object] = {}
    try:
        cluster.start()
        files = [copy_with_new_uids(DX_NIH, tmp_path / "studies") for _ in range(STUDIES)]
        study_of = {p.stem: str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID)
                    for p in files}
        acknowledged: dict[str, str] = {}
        sent_all = threading.Event()
        sender = threading.Thread(target=_send_all, args=(cluster, files, acknowledged,
                                                          sent_all), daemon=True)
        started = time.monotonic()
        sender.start()
        chooser = random.Random(SEED)
        kills: list[str] = []
        for number in range(KILLS):
            time.sleep(chooser.uniform(4.0, 9.0))
            victim = chooser.choice(cluster.processes)
            kills.append(victim.root.name)
            _kill_and_restart(victim)
            if number == 1:  # jobs are queued now: the broker restarts under them
                rabbitmq.restart()
                kills.append("broker-restart")
        # a graceful stop (SIGTERM) drains: the job in hand finishes or goes back
        drained = cluster.workers[2]
        assert drained.stop() == 0
        drained.start(timeout=180)
        sent_all.wait(600)
        assert len(acknowledged) == STUDIES

        def every_study_delivered() -> bool:
            received = destination.received()
            return len(received) >= 2 * STUDIES
        wait_for(every_study_delivered, 420, "SEG and SR of every study at storescp",
                 interval=2.0)
        time.sleep(3.0)  # a late duplicate would show now
        received = destination.received()
        # the killed workers' leases run out within WORKER_LEASE_S: then the 3 running
        # workers, and only they, are alive
        running = {str(w.process.pid) for w in cluster.workers if w.process is not None}

        def alive_workers(status: dict) -> set[str]:
            return {w["id"].split(":")[1] for w in status["workers"]
                    if w["role"] == "worker" and w["alive"]}
        status = wait_for(lambda: (s := _status(cluster.workers[0])) and
                          alive_workers(s) == running and s,
                          WORKER_LEASE_S + 15, "only the running workers alive", interval=1.0)
        assert status["queue_depth"] == 0
        assert sum(w["jobs_done"] for w in status["workers"]) >= STUDIES
        figures = _figures(cluster, received, study_of, kills, time.monotonic() - started)
    finally:
        cluster.stop()
        destination.stop()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "distributed.json").write_text(json.dumps(figures, indent=1) + "\n")
    assert figures["lost_studies"] == 0, figures
    assert figures["duplicated_results"] <= figures["kills"], figures  # type: ignore[operator]


def _status(node: NodeProcess) -> dict:
    reply = subprocess.run([sys.executable, "-m", "dicom_node", "status", "--config",
                            str(node.config_path), "--json"], capture_output=True, text=True,
                           timeout=60)
    assert reply.returncode == 0, reply.stderr
    return dict(json.loads(reply.stdout))


def _figures(cluster: Cluster, received: dict[str, int], study_of: dict[str, str],
             kills: list[str], seconds: float) -> dict[str, object]:
    """Lost: an acknowledged study with no SEG and SR at the destination (results are
    matched to studies through the store)."""
    rows = cluster.workers[0].query(
        "SELECT s.study_uid, r.sop_uid FROM results r JOIN studies s ON s.id = r.study_id")
    results_of: dict[str, list[str]] = {}
    for study_uid, result_uid in rows:
        results_of.setdefault(study_uid, []).append(result_uid)
    lost = [s for s in study_of.values()
            if not results_of.get(s) or any(received.get(r, 0) == 0 for r in results_of[s])]
    return {"studies": len(study_of), "kills": len([k for k in kills if k != "broker-restart"]),
            "killed": kills, "graceful_stops": 1,
            "results_expected": sum(len(v) for v in results_of.values()),
            "results_received": sum(received.values()), "lost_studies": len(lost),
            "duplicated_results": sum(count - 1 for count in received.values() if count > 1),
            "seconds": round(seconds, 1)}
