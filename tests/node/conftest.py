"""Fixtures of the node tests (helpers live in node_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pynetdicom import _config

from tests.node.services import Postgres


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
