"""Fixtures of the node tests (helpers live in node_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import _config

from tests.node.node_helpers import DEST_AE, NodeProcess, Orthanc, Storescp, free_port
from tests.node.services import Postgres
from tests.node.web_helpers import DICOMWEB_PLUGIN, WebNode


@pytest.fixture
def processes() -> Iterator[list]:
    """Register anything with ``stop()``; all are stopped after the test, in reverse."""
    started: list = []
    yield started
    for item in reversed(started):
        item.stop()


@pytest.fixture
def chunked_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom then streams a file's dataset bytes instead of re-encoding them."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """One real PostgreSQL server for the session (each test takes its own database)."""
    server = Postgres(tmp_path_factory.mktemp("postgres")).start()
    try:
        yield server
    finally:
        server.stop()

def start_web_node(root: Path) -> WebNode:
    """A node with four destinations: storescp by C-STORE, Orthanc by STOW-RS, and a
    C-STORE and a STOW-RS one that nobody answers (their deliveries dead-letter at once);
    Orthanc can also push to the node's STOW-RS with the node's token."""
    destination = Storescp(root / "dest").start()
    orthanc_http = free_port()
    node = NodeProcess(root / "node", destinations=[
        ("pacs", DEST_AE, destination.port), ("gone", "GONE", free_port())],
        extra="[[destinations]]\nname = \"web\"\n"
              f'stow_url = "http://127.0.0.1:{orthanc_http}/dicom-web/"\n'
              "[[destinations]]\nname = \"webgone\"\n"
              f'stow_url = "http://127.0.0.1:{free_port()}/dicom-web/"\ntimeout_s = 5\n'
              "[retry]\nmax_attempts = 1\ninitial_backoff_s = 0.1\nmax_backoff_s = 0.1\n"
              "[web]\nmax_upload_mb = 48\n")
    created = node.cli("token", "create", "reviewer")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert DICOMWEB_PLUGIN.is_file(), "apt package orthanc-dicomweb (scripts/install.sh --test)"
    orthanc = Orthanc(root / "orthanc", node_port=free_port(), stable_age=3600, settings={
        "HttpPort": orthanc_http, "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Servers": {"cxrnode": {
            "Url": f"http://127.0.0.1:{node.http_port}/",
            "HttpHeaders": {"Authorization": f"Bearer {token}"}}}}})
    orthanc.http_port = orthanc_http
    orthanc.start()
    node.start()
    return WebNode(node, destination, token, root, orthanc)


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    started = start_web_node(tmp_path_factory.mktemp("web"))
    try:
        yield started
    finally:
        started.node.stop()
        started.destination.stop()
        started.orthanc.stop()
