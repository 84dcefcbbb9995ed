"""Wall-time of named steps, recorded into a timings dict (``analysis.json``'s ``timings_s``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Record the wall time of the ``with`` block under ``step`` (seconds, 4 decimals)."""
    started = time.perf_counter()
    yield
    timings[step] = round(time.perf_counter() - started, 4)


def timed_call(timings: dict[str, float], step: str, function: Callable[P, R],
               *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``function`` and record its wall time under ``step``."""
    with timed(timings, step):
        return function(*args, **kwargs)
