"""kill -9 while deliveries are pending (node_kill9.py; CI runs 2 kills, the script 20):
nothing is lost at any destination, a destination asked with C-FIND never receives a
result twice, and a PACS that keeps the first copy holds exactly one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.node.node_kill9 import run


@pytest.mark.slow
def test_kills_while_deliveries_are_pending(tmp_path: Path) -> None:
    report = run(tmp_path, kills=2, studies=2,
                 destinations=("storescp", "orthanc-keep", "orthanc-reject"))
    assert report.kills == 2 and report.kills_with_deliveries_pending >= 1, report
    for name, tally in report.destinations.items():
        assert tally.results == 4 and tally.lost == 0, (name, tally)
    assert report.destinations["orthanc-reject"].received_twice == 0
    assert report.destinations["orthanc-reject"].dead == 0
    assert report.destinations["orthanc-keep"].copies_held_max == 1
