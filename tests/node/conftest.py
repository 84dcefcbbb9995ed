"""Fixtures of the node tests (helpers live in node_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import _config

from tests.node.node_helpers import DEST_AE, NodeProcess, Storescp, free_port
from tests.node.web_helpers import WebNode


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


def start_web_node(root: Path, *, extra: str = "") -> WebNode:
    destination = Storescp(root / "dest").start()
    node = NodeProcess(root / "node", destinations=[
        ("pacs", DEST_AE, destination.port), ("gone", "GONE", free_port())],
        extra="[retry]\nmax_attempts = 1\ninitial_backoff_s = 0.1\nmax_backoff_s = 0.1\n"
              "[web]\nmax_upload_mb = 48\n" + extra)
    created = node.cli("token", "create", "reviewer")
    assert created.returncode == 0, created.stderr
    node.start()
    return WebNode(node, destination, created.stdout.strip(), root)


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    started = start_web_node(tmp_path_factory.mktemp("web"))
    try:
        yield started
    finally:
        started.node.stop()
        started.destination.stop()
