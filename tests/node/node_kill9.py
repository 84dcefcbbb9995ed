"""kill -9 the node while deliveries are pending, again and again, then count per
destination what was lost and what arrived twice.

Every study (one NIH DX image) is acknowledged before the first kill. Each round starts
the node, waits for its engine, waits for a delivery attempt to begin, sleeps a random
0-300 ms and kills it with SIGKILL; after the last kill the node runs until nothing is
pending. Destinations (all real, on loopback):

* ``storescp``: dcmtk storescp ``+uf`` (a repeat is a second file), ``in_doubt = "resend"``;
* ``orthanc-keep``: Orthanc with its defaults (keeps the first copy), ``"resend"``;
* ``orthanc-reject``: Orthanc rejecting a held UID with 0xA700 (Lua), ``"c-find"``;
* ``orthanc-reject-resend``: the same Orthanc, ``"resend"`` (script only).

Orthanc's counts come from a Lua filter that logs each complete C-STORE it receives.

    .venv/bin/python -m tests.node.node_kill9 --kills 20 --studies 30
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.node.node_helpers import (
    DX_NIH,
    NodeProcess,
    Orthanc,
    Storescp,
    copy_with_new_uids,
    free_port,
    storescu,
    wait_for,
)

COUNT_RECEIVED = """
function ReceivedCStoreInstanceFilter(dicom, origin, info)
  print('CXR-RECEIVED ' .. dicom.SOPInstanceUID)
  {reject}
  return 1
end
"""
REJECT = """local held = ParseJson(RestApiPost('/tools/lookup', dicom.SOPInstanceUID))
  if #held > 0 then error('SOP Instance UID already stored') end"""
RETRY = "[retry]\nmax_attempts = 3\ninitial_backoff_s = 0.5\nmax_backoff_s = 1.0\n"
ALL_DESTINATIONS = ("storescp", "orthanc-keep", "orthanc-reject", "orthanc-reject-resend")


@dataclass
class Tally:
    """One destination's outcome."""

    results: int = 0
    lost: int = 0
    received_twice: int = 0
    copies_held_max: int = 0
    in_doubt_attempts: int = 0
    settled_by_c_find: int = 0
    dead: int = 0


@dataclass
class Report:
    kills: int = 0
    kills_with_deliveries_pending: int = 0
    studies: int = 0
    seconds: float = 0.0
    destinations: dict[str, Tally] = field(default_factory=dict)


class OrthancDestination(Orthanc):
    """Orthanc that logs each C-STORE it receives (and may reject held UIDs)."""

    def __init__(self, root: Path, *, node_port: int, reject: bool) -> None:
        super().__init__(root, node_port=node_port, route=False,
                         lua=COUNT_RECEIVED.replace("{reject}", REJECT if reject else ""))

    def receipts(self) -> collections.Counter:
        log = (self.root / "orthanc.log").read_text(errors="replace")
        return collections.Counter(re.findall(r"CXR-RECEIVED ([0-9.]+)", log))

    def held(self) -> collections.Counter:
        return collections.Counter(i["MainDicomTags"]["SOPInstanceUID"]
                                   for i in self.get("/instances?expand"))


def _destinations(root: Path, names: tuple[str, ...], node_port: int) -> dict[str, Any]:
    """The destinations, not started; Orthanc knows the node as a modality (so it
    answers the node's C-FIND)."""
    return {name: Storescp(root / name) if name == "storescp" else
            OrthancDestination(root / name, node_port=node_port, reject="reject" in name)
            for name in names}


def _port(peer: Any) -> int:
    return int(peer.port if isinstance(peer, Storescp) else peer.dicom_port)


def _attempts_started(node: NodeProcess) -> int:
    return int(node.query("SELECT COUNT(*) FROM attempts")[0][0])


def _pending(node: NodeProcess) -> int:
    """Deliveries not settled, plus instances whose results are not made yet."""
    return int(node.query("SELECT (SELECT COUNT(*) FROM deliveries WHERE state = 'pending')"
                          " + (SELECT COUNT(*) FROM instances WHERE state = 'received')")[0][0])


def _one_round(node: NodeProcess, rng: random.Random) -> bool:
    """Start, wait for the engine and a delivery attempt, kill -9; True when deliveries
    were pending at the kill."""
    node.start()
    wait_for(lambda: '"ready"' in node.http("/healthz")[1], 180, "the engine", interval=0.1)
    before = _attempts_started(node)
    wait_for(lambda: _attempts_started(node) > before or _pending(node) == 0, 180,
             "a delivery attempt", interval=0.02)
    time.sleep(rng.uniform(0.0, 0.3))
    node.kill9()
    return int(node.query("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")[0][0]) > 0


def _tally(node: NodeProcess, name: str, peer: Any) -> Tally:
    results = {uid for (uid,) in node.query("SELECT sop_uid FROM results")}
    if isinstance(peer, Storescp):
        receipts = peer.received()
        held = receipts
    else:
        receipts, held = peer.receipts(), peer.held()
    rows = node.query("SELECT kind, status, detail FROM attempts WHERE destination = ?", (name,))
    return Tally(
        results=len(results), lost=len(results - set(held)),
        received_twice=sum(max(0, receipts[u] - 1) for u in results),
        copies_held_max=max((held[u] for u in results), default=0),
        in_doubt_attempts=sum(1 for kind, status, _ in rows if kind == "c-store" and
                              status is None),
        settled_by_c_find=sum(1 for kind, _, detail in rows if kind == "c-find" and
                              detail == "held by the destination (C-FIND)"),
        dead=int(node.query("SELECT COUNT(*) FROM deliveries WHERE destination = ? AND "
                            "state = 'dead'", (name,))[0][0]))


def run(root: Path, *, kills: int, studies: int, seed: int = 14,
        destinations: tuple[str, ...] = ALL_DESTINATIONS) -> Report:
    """Run the experiment under ``root``; every process it starts is stopped."""
    started = time.monotonic()
    node_port = free_port()
    peers = _destinations(root, destinations, node_port)
    in_doubt = {name: "c-find" if name == "orthanc-reject" else "resend" for name in peers}
    node = NodeProcess(root / "node", port=node_port, in_doubt=in_doubt, extra=RETRY,
                       destinations=[(name, "ORTHANC" if name.startswith("orthanc") else
                                      "DEST", _port(peer)) for name, peer in peers.items()])
    report = Report(studies=studies)
    try:
        _prepare(node, peers, root, studies)
        rng = random.Random(seed)
        for _ in range(kills):
            if _pending(node) == 0:
                break
            report.kills += 1
            report.kills_with_deliveries_pending += _one_round(node, rng)
        node.start()
        wait_for(lambda: _pending(node) == 0, 600, "every delivery settled", interval=0.5)
        time.sleep(1.0)  # storescp's last file complete
        report.destinations = {name: _tally(node, name, peer) for name, peer in peers.items()}
        assert node.stop() == 0
    finally:
        node.stop()
        for peer in peers.values():
            peer.stop()
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _prepare(node: NodeProcess, peers: dict[str, Any], root: Path, studies: int) -> None:
    for peer in peers.values():
        peer.start()
    node.start()
    files = [copy_with_new_uids(DX_NIH, root / "in") for _ in range(studies)]
    sent = storescu(files, node.port)
    assert sent.returncode == 0, sent.stderr[-500:]
    node.kill9()  # the rounds start it again


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--studies", type=int, default=30)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="node-kill9-"))
    try:
        report = run(root, kills=args.kills, studies=args.studies, seed=args.seed)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(asdict(report), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
