"""Supervised loops: a background loop never dies silently.

Contract of a loop's ``tick()``: one bounded unit of work (a scheduling pass, one job, one
round of deliveries). When it raises, the exception is logged as one JSON line (type and
place only, never its message), the loop waits a backoff (``period_s`` doubling up to
:data:`MAX_BACKOFF_S`) and ticks again: the equivalent of a restart, without losing the
thread's state. ``/healthz`` reads :meth:`Heartbeat.stale` (see ``Node.health``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 5.0


class Heartbeat:
    """When a loop last completed a tick.

    Parameters
    ----------
    name:
        The loop's name in logs and ``/healthz``.
    stale_after_s:
        A loop that has not ticked for this long is unhealthy.
    """

    def __init__(self, name: str, stale_after_s: float) -> None:
        self.name = name
        self.stale_after_s = stale_after_s
        self.last = time.monotonic()
        self.failures = 0

    def beat(self) -> None:
        self.last = time.monotonic()

    def stale(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self.last > self.stale_after_s


def run_supervised(heartbeat: Heartbeat, tick: Callable[[], None], *,
                   stop: threading.Event, period_s: float,
                   wait: Callable[[float], None] | None = None) -> None:
    """Call ``tick`` until ``stop`` is set, ``period_s`` apart (``wait`` may wake early)."""
    pause: Callable[[float], object] = wait or stop.wait
    heartbeat.beat()
    while not stop.is_set():
        try:
            tick()
        except Exception:
            heartbeat.failures += 1
            log.exception("loop failed", extra={"fields": {
                "loop": heartbeat.name, "failures": heartbeat.failures}})
            stop.wait(min(MAX_BACKOFF_S, period_s * 2 ** min(heartbeat.failures, 8)))
            continue
        if heartbeat.failures:
            log.info("loop recovered", extra={"fields": {
                "loop": heartbeat.name, "after_failures": heartbeat.failures}})
            heartbeat.failures = 0
        heartbeat.beat()
        pause(period_s)
