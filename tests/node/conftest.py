"""Fixtures of the node tests (helpers live in node_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def processes() -> Iterator[list]:
    """Register anything with ``stop()``; all are stopped after the test, in reverse."""
    started: list = []
    yield started
    for item in reversed(started):
        item.stop()
