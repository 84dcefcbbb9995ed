"""Who may talk to the node: peer address allowlist, disk-space refusal, TLS."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.node.node_helpers import (
    DX_NIH,
    NodeProcess,
    copy_with_new_uids,
    echoscu,
    free_port,
    make_certificate,
    received_sop_uids,
    require_tool,
    storescu,
    wait_for,
)


def test_peer_address_outside_allowlist_is_rejected(tmp_path: Path, processes: list) -> None:
    node = NodeProcess(tmp_path, destinations=[])
    text = node.config_path.read_text().replace(
        "min_free_disk_mb = 1", 'min_free_disk_mb = 1\nallowed_ips = ["10.0.0.0/8"]')
    node.config_path.write_text(text)
    processes.append(node)
    node.start()
    result = echoscu(node.port)  # right AE title, wrong address (127.0.0.1)
    assert result.returncode != 0 and "Association Rejected" in result.stderr
    assert '"reason": "peer address not allowed"' in node.log()


def test_nearly_full_disk_refuses_associations_transiently(tmp_path: Path,
                                                           processes: list) -> None:
    # "nearly full" is relative to the threshold: demand more free space than exists
    node = NodeProcess(tmp_path, destinations=[])
    text = node.config_path.read_text().replace("min_free_disk_mb = 1",
                                                "min_free_disk_mb = 1e12")
    node.config_path.write_text(text)
    processes.append(node)
    node.start()
    result = storescu([DX_NIH], node.port)
    assert result.returncode != 0
    assert "Rejected Transient" in result.stderr and "Local Limit Exceeded" in result.stderr
    assert not list((node.storage / "spool").rglob("*.dcm"))
    code, body = node.http("/healthz")
    assert code == 503 and json.loads(body)["status"] == "unhealthy"


def test_tls_in_and_out(tmp_path: Path, processes: list) -> None:
    """storescu over TLS -> node -> storescp over TLS; plain TCP is not accepted."""
    node_key, node_cert = make_certificate(tmp_path, "node")
    client_key, client_cert = make_certificate(tmp_path, "client")
    dest_key, dest_cert = make_certificate(tmp_path, "dest")
    trusted = tmp_path / "trusted.pem"  # the node trusts the PACS and the destination
    trusted.write_text(client_cert.read_text() + dest_cert.read_text())
    dest_port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    destination = subprocess.Popen(
        [require_tool("storescp"), "+tls", str(dest_key), str(dest_cert), "+cf",
         str(node_cert), "-aet", "DEST", "-od", str(received), "+uf", str(dest_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes.append(_Stoppable(destination))
    node = NodeProcess(tmp_path, destinations=[], extra=(
        f'[tls]\ncertificate = "{node_cert}"\nprivate_key = "{node_key}"\n'
        f'ca_certificates = "{trusted}"\nrequire_client_certificate = true\n'
        f'[[destinations]]\nname = "dest"\nae_title = "DEST"\nhost = "127.0.0.1"\n'
        f"port = {dest_port}\ntls = true\n"))
    processes.append(node)
    node.start()
    tls = ["+tls", str(client_key), str(client_cert), "+cf", str(node_cert)]
    echo = [require_tool("echoscu"), "-aet", "PACS", "-aec", "CXRNODE"]
    secure = subprocess.run([*echo, *tls, "127.0.0.1", str(node.port)],
                            capture_output=True, text=True, timeout=30)
    assert secure.returncode == 0, secure.stderr
    assert echoscu(node.port).returncode != 0  # no TLS, no association
    image = copy_with_new_uids(DX_NIH, tmp_path / "in")
    sent = subprocess.run([require_tool("storescu"), "-R", "-aet", "PACS", "-aec", "CXRNODE",
                           *tls, "127.0.0.1", str(node.port), str(image)],
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    counts = wait_for(lambda: len(received_sop_uids(received)) >= 2 and
                      received_sop_uids(received), 90, "SEG and SR over TLS")
    assert len(counts) == 2 and set(counts.values()) == {1}


class _Stoppable:
    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
