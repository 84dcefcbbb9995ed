"""Analysis one instance ahead of the writing.

A worker's time per instance is two halves of similar size: analysing it (reading,
decoding, the networks: torch and numpy, which run beside other Python threads) and
writing its results (building the SEG and SR with pydicom and highdicom, files, the
store: mostly Python). :class:`Lookahead` runs the analysis in a thread of its own, so
while the worker writes one instance's results the next instance is already being
analysed; on two cores the halves overlap.

Analysing changes nothing the store knows (:meth:`dicom_node.worker.Analyzer.analyze`),
so an analysis made ahead for an instance that is then not processed (its study was
claimed elsewhere, the node stopped) is dropped and nothing is lost. At most one
analysis is made ahead, so at most two are held (one written, one made).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from dicom_node.store import Instance

T = TypeVar("T")


class Lookahead(Generic[T]):
    """Analyses instances in one thread of its own, one ahead of the caller.

    Parameters
    ----------
    analyze:
        ``(instance, study UID) -> what the writer needs``; must change no state but
        its own outputs' files (it may run for an instance that is never processed).
    name:
        Prefix of the thread's name.
    on_start:
        Called first in the new thread (the worker lowers its priority there).
    """

    def __init__(self, analyze: Callable[[Instance, str], T], *, name: str,
                 on_start: Callable[[], None]) -> None:
        self._analyze = analyze
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name,
                                            initializer=on_start)
        self._ahead: tuple[tuple[str, str], Future[T]] | None = None

    def ahead(self, instance: Instance, study_uid: str) -> None:
        """Start analysing ``instance``, the one :meth:`result` will be asked for next
        (an analysis made ahead for another instance is dropped)."""
        key = (instance.sop_uid, str(instance.path))
        if self._ahead is not None and self._ahead[0] == key:
            return
        self.drop()
        self._ahead = (key, self._executor.submit(self._analyze, instance, study_uid))

    def result(self, instance: Instance, study_uid: str) -> T:
        """The analysis of ``instance``: the one made ahead if it is this instance's,
        else made now. Raises what analysing raised."""
        self.ahead(instance, study_uid)
        assert self._ahead is not None
        future = self._ahead[1]
        self._ahead = None
        return future.result()

    def drop(self) -> None:
        """Forget the analysis made ahead (one already running finishes, unread)."""
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None

    def close(self) -> None:
        """Drop what is ahead and let the thread end once idle."""
        self.drop()
        self._executor.shutdown(wait=False, cancel_futures=True)
