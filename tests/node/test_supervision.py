"""No silent death (issue 14 item 3, red team F4): the storage fills completely between
acknowledgement and analysis, on a real 48 MiB tmpfs (private mount namespace). The
loops log one JSON line per failure and go on, ``/healthz`` turns 503, nothing
acknowledged is lost, and once space returns everything is processed without a restart."""

from __future__ import annotations

import json
from pathlib import Path

from tests.node.node_helpers import (
    DX_NIH,
    NodeProcess,
    copy_with_new_uids,
    storescu,
    wait_for,
)


def _fill(folder: Path) -> Path:
    """Write zeros into ``folder`` until the file system is full."""
    filler = folder / "filler.bin"
    chunk = bytes(2**20)
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError:
            pass
    return filler


def _metric(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


def test_full_disk_is_survived_and_recovered(tmp_path: Path, processes: list) -> None:
    node = NodeProcess(tmp_path, destinations=[], quiet_period=3, tmpfs_mb=48)
    node.config_path.write_text(node.config_path.read_text().replace(
        "min_free_disk_mb = 1", "min_free_disk_mb = 0"))
    processes.append(node)
    node.start()
    images = [copy_with_new_uids(DX_NIH, tmp_path / "in", study_uid="1.2.3.4.5")
              for _ in range(2)]
    assert storescu(images, node.port).returncode == 0  # acknowledged
    filler = _fill(node.storage)
    wait_for(lambda: node.http("/healthz")[0] == 503, 30, "/healthz to turn unhealthy")
    code, body = node.http("/healthz")
    assert "scheduler" in json.loads(body)["stale_loops"]
    # acknowledged and kept: both files in the spool, none analysed, refused or failed
    # (the database is read through /metrics: the tmpfs is in the node's own namespace)
    assert len(list((node.storage / "spool").rglob("*.dcm"))) == 2
    _, metrics = node.http("/metrics")
    assert _metric(metrics, "cxr_node_instances_processed_total") == 0
    assert "cxr_node_instances_failed_total{" not in metrics
    filler.unlink()
    wait_for(lambda: node.http("/healthz")[0] == 200, 30, "/healthz to recover")
    wait_for(lambda: _metric(node.http("/metrics")[1], "cxr_node_instances_processed_total")
             == 2, 180, "both instances to be processed")
    lines = node.log().splitlines()
    assert all(line.startswith("{") for line in lines), "a non-JSON line in the log"
    failures = [json.loads(line) for line in lines if '"loop failed"' in line]
    assert failures and all(f["loop"] and f["exception"] for f in failures)
    assert any('"loop recovered"' in line for line in lines)
    assert node.stop() == 0
