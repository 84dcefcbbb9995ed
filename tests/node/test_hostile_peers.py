"""Stalled and hostile peers cannot block others (issue 14 item 2, red team F2, F3, F5, F9).

Real sockets on loopback: the attackers bind 127.0.0.2-4 (their own peer addresses), the
legitimate peer is dcmtk's echoscu from 127.0.0.1. One node serves every case in order.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from tests.node.node_helpers import (
    DX_NIH,
    NODE_AE,
    PACS_AE,
    NodeProcess,
    copy_with_new_uids,
    echoscu,
    make_certificate,
    require_tool,
    storescu,
)
from tests.node.test_limits import peak_rss_mib

ECHO_WITHIN_S = 5.0


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


@contextlib.contextmanager
def _held(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _timed_echo(port: int, extra: list[str] | None = None) -> float:
    started = time.monotonic()
    command = [require_tool("echoscu"), "-to", "20", "-ta", "20", "-aet", PACS_AE,
               "-aec", NODE_AE, *(extra or []), "127.0.0.1", str(port)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    took = time.monotonic() - started
    print(f"echo answered in {took:.2f} s")
    return took


def _stream_until_closed(sock: socket.socket, header: bytes, limit_mb: int = 256) -> int:
    """Send ``header`` then zeros until the peer closes; return the bytes it took."""
    sock.settimeout(10)
    sent = 0
    chunk = bytes(2**20)
    try:
        sock.sendall(header)
        while sent < limit_mb * 2**20:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # reset or broken pipe: the node closed it
        print(f"the node closed the connection after {sent / 2**20:.0f} MiB")
        return sent
    raise AssertionError(f"the node took {limit_mb} MiB of one PDU")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    process = NodeProcess(tmp_path_factory.mktemp("hostile"), destinations=[],
                          extra="[limits]\npdu_timeout_s = 3\n")
    process.start()
    yield process
    process.stop()


def test_stalled_and_silent_connections_leave_echo_answered(node: NodeProcess) -> None:
    stalled = [_connect(node.port, "127.0.0.2") for _ in range(16)]
    silent = [_connect(node.port, "127.0.0.3") for _ in range(20)]
    with _held(stalled + silent):
        for sock in stalled:
            sock.sendall(b"\x01\x00\x00")  # 3 bytes of a 6-byte PDU header, then nothing
        for moment in (1, 6):  # at once, and after the PDU timeout passed
            time.sleep(max(0.0, moment - 1))
            assert _timed_echo(node.port) < ECHO_WITHIN_S
    _, metrics = node.http("/metrics")
    assert 'reason="too many connections from one address"' in metrics


def test_oversized_pdus_are_dropped_unread(node: NodeProcess) -> None:
    assert node.process is not None
    peak_before = peak_rss_mib(node.process.pid)
    with _held([_connect(node.port, "127.0.0.4")]) as (sock,):
        taken = _stream_until_closed(sock, struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0))
    assert taken < 32 * 2**20
    ae = AE(ae_title=PACS_AE)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AE)
    assert assoc.is_established
    raw = assoc.dul.socket.socket  # the SCU's own socket: write a P-DATA-TF header by hand
    taken = _stream_until_closed(raw, struct.pack(">BBL", 0x04, 0, 0xFFFFFFF0))
    assoc.abort()
    assert taken < 32 * 2**20
    assert peak_rss_mib(node.process.pid) - peak_before < 64
    assert _timed_echo(node.port) < ECHO_WITHIN_S
    _, metrics = node.http("/metrics")
    assert 'reason="association request too large"' in metrics
    assert 'reason="PDU over the negotiated maximum"' in metrics


def test_called_ae_title_is_checked(node: NodeProcess, tmp_path: Path) -> None:
    assert echoscu(node.port, called_ae="WRONGAE").returncode != 0
    image = copy_with_new_uids(DX_NIH, tmp_path)
    command = [require_tool("storescu"), "-aet", PACS_AE, "-aec", "WRONGAE", "127.0.0.1",
               str(node.port), str(image)]
    sent = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert "Called AE Title Not Recognized" in sent.stderr
    assert not list((node.storage / "spool").rglob("*.dcm"))
    assert storescu([image], node.port).returncode == 0  # the right title still stores


def test_silent_tls_connection_blocks_nobody_and_sigterm_stops(tmp_path: Path,
                                                              processes: list) -> None:
    node_key, node_cert = make_certificate(tmp_path, "node")
    client_key, client_cert = make_certificate(tmp_path, "client")
    node = NodeProcess(tmp_path, destinations=[], extra=(
        f'[tls]\ncertificate = "{node_cert}"\nprivate_key = "{node_key}"\n'
        f'ca_certificates = "{client_cert}"\nrequire_client_certificate = true\n'))
    processes.append(node)
    node.start()
    tls = ["+tls", str(client_key), str(client_cert), "+cf", str(node_cert)]
    with _held([_connect(node.port, "127.0.0.2")]):
        assert _timed_echo(node.port, tls) < ECHO_WITHIN_S
        assert node.process is not None
        started = time.monotonic()
        code = node.stop(timeout=10)  # SIGTERM with the silent connection still open
        assert code == 0 and time.monotonic() - started < 10
