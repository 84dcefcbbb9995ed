"""kill -9 while deliveries are pending (node_kill9.py; CI runs 2 kills against storescp
and an Orthanc that rejects held UIDs, the script 20 against four destinations): nothing
is lost, and the Orthanc, asked with C-FIND before any resend, never receives a result
twice and dead-letters nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.node.node_kill9 import run


@pytest.mark.slow
def test_kills_while_deliveries_are_pending(tmp_path: Path) -> None:
    report = run(tmp_path, kills=2, studies=2,
                 destinations=("storescp", "orthanc-reject"))
    assert report.kills == 2 and report.kills_with_deliveries_pending >= 1, report
    for name, tally in report.destinations.items():
        assert tally.results == 4 and tally.lost == 0, (name, tally)
    assert report.destinations["orthanc-reject"].received_twice == 0
    assert report.destinations["orthanc-reject"].dead == 0
    assert report.destinations["orthanc-reject"].copies_held_max == 1
