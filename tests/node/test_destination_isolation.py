"""Destinations are isolated (issue 14 item 4, red team F6): a destination that accepts
TCP and never answers, listed first, does not delay a good one; its own deliveries back
off and dead-letter on their own."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from tests.node.node_helpers import (
    DX_NIH,
    NodeProcess,
    Storescp,
    copy_with_new_uids,
    storescu,
    wait_for,
)


class BlackHole:
    """A TCP listener that accepts connections, reads them and never answers."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> BlackHole:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(connection)

    def stop(self) -> None:
        self.server.close()
        for connection in self.connections:
            connection.close()


def test_hung_destination_delays_no_other(tmp_path: Path, processes: list) -> None:
    hole = BlackHole().start()
    good = Storescp(tmp_path / "good").start()
    processes += [hole, good]
    extra = ("[retry]\nmax_attempts = 2\ninitial_backoff_s = 1.0\nmultiplier = 1.0\n"
             "[[destinations]]\nname = \"hole\"\nae_title = \"HOLE\"\nhost = \"127.0.0.1\"\n"
             f"port = {hole.port}\ntimeout_s = 5\n")
    node = NodeProcess(tmp_path / "node", destinations=[], extra=extra)
    text = node.config_path.read_text().replace(extra, "")
    # the hung destination first, as in the red team's run
    node.config_path.write_text(text + extra + "[[destinations]]\nname = \"good\"\n"
                                f"ae_title = \"DEST\"\nhost = \"127.0.0.1\"\nport = {good.port}\n")
    processes.append(node)
    node.start()
    wait_for(lambda: '"engine": "ready"' in node.http("/healthz")[1], 120, "the engine")
    image = copy_with_new_uids(DX_NIH, tmp_path / "in")
    assert storescu([image], node.port).returncode == 0
    wait_for(lambda: '"study processed"' in node.log(), 120, "the analysis")
    processed = time.monotonic()
    wait_for(lambda: len(good.received()) == 2, 60, "SEG and SR at the good destination")
    delay = time.monotonic() - processed
    print(f"good destination served {delay:.1f} s after the analysis")
    assert delay < 5  # one hung attempt alone costs the 5 s timeout
    wait_for(lambda: {r[0] for r in node.query(
        "SELECT state FROM deliveries WHERE destination = 'hole'")} == {"dead"}, 60,
        "the hung destination's deliveries to dead-letter")
    assert {r[0] for r in node.query(
        "SELECT state FROM deliveries WHERE destination = 'good'")} == {"sent"}
    assert node.stop() == 0
