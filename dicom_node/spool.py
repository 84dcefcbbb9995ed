"""The durable spool: received instances, quarantined ones and results, as files.

Layout under the storage folder::

    incoming/<random>.part          being written (never read by anyone else)
    spool/<StudyUID>/<SOPUID>.dcm   acknowledged instances
    quarantine/<StudyUID>/<SOPUID>.dcm   refused by the analysis, kept for the operator
    results/<StudyUID>/<SOPUID>.dcm      SEG / SR / SC made by the node

File and folder names are UIDs that passed :func:`checked_uid` (digits and dots only),
so a dataset can never steer a path outside these folders.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_UID_LENGTH = 64
MAX_REMEMBERED_DIRS = 10_000


class UnsafeUID(ValueError):
    """A UID that is not digits and dots (at most 64 characters)."""


def checked_uid(value: object, what: str) -> str:
    """Return ``value`` as a UID string fit to be a file name, or raise :class:`UnsafeUID`.

    Leading zeros inside components are tolerated (some modalities write them); anything
    but digits and dots, and anything longer than 64 characters, is not.
    """
    text = str(value or "").strip().rstrip("\x00").strip()
    if not text:
        raise UnsafeUID(f"{what} is missing")
    if len(text) > MAX_UID_LENGTH or not _UID.fullmatch(text):
        raise UnsafeUID(f"{what} is not a valid UID (digits and dots, at most 64 characters)")
    return text


VERSION_SEPARATOR = "~"
"""A re-used SOP Instance UID kept as a new version is stored as ``<UID>~<n>`` (n >= 2)."""


def instance_key(sop_uid: str, version: int) -> str:
    """The store's and spool's name for version ``version`` of an instance."""
    return sop_uid if version <= 1 else f"{sop_uid}{VERSION_SEPARATOR}{version}"


def checked_instance_key(value: str, what: str) -> str:
    """Like :func:`checked_uid`, for an instance key (a UID, or a UID and a version)."""
    uid, separator, version = value.partition(VERSION_SEPARATOR)
    if separator and not (version.isdigit() and int(version) >= 2):
        raise UnsafeUID(f"{what} is not a valid instance version")
    return checked_uid(uid, what) + separator + version


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in ``path`` survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """File operations on the storage folder; every write is fsync'ed before it returns.

    Parameters
    ----------
    root:
        The node's storage folder (created if missing).
    """

    def __init__(self, *, root: Path) -> None:
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.received = self.root / "spool"
        self.quarantine = self.root / "quarantine"
        self.results = self.root / "results"
        self.review = self.root / "review"
        for folder in (self.incoming, self.received, self.quarantine, self.results,
                       self.review):
            folder.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[Path] = set()

    def instance_path(self, study_uid: str, sop_uid: str) -> Path:
        return self.received / study_uid / f"{sop_uid}.dcm"

    def result_path(self, study_uid: str, sop_uid: str) -> Path:
        return self.results / study_uid / f"{sop_uid}.dcm"

    def review_folder(self, study_uid: str, instance: str) -> Path:
        """The review page's layers of one analysed instance (not fsync'ed: they can be
        rebuilt, and a lost one only leaves the page without a picture)."""
        return self._inside(self.review / study_uid / instance)

    def write_durably(self, target: Path, chunks: list[bytes]) -> Path:
        """Write ``chunks`` to ``target`` atomically: temp file, fsync, rename, fsync dir.

        ``target`` must lie under the storage folder (callers build it from checked UIDs).
        """
        target = self._inside(target)
        temporary = self.incoming / f"{secrets.token_hex(8)}.part"
        try:
            with temporary.open("wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return self._publish(temporary, target)

    def adopt_durably(self, source: Path, target: Path) -> Path:
        """Make ``source``, a file already written in ``incoming/``, the file ``target``
        atomically: fsync it, hard-link it under a temporary name, rename, fsync the
        folder. ``source`` itself stays (its writer deletes it)."""
        target = self._inside(target)
        with Path(source).open("rb") as handle:
            os.fsync(handle.fileno())
        temporary = self.incoming / f"{secrets.token_hex(8)}.part"
        os.link(source, temporary)
        return self._publish(temporary, target)

    def _inside(self, target: Path) -> Path:
        """``target``, after checking it lies under the storage folder."""
        target = Path(target)
        if self.root.resolve() not in target.resolve().parents:
            raise ValueError(f"refusing to write outside the storage folder: {target}")
        return target

    def _publish(self, temporary: Path, target: Path) -> Path:
        """Rename the durable ``temporary`` onto ``target`` and fsync the folder; the
        temporary file goes if the rename fails."""
        try:
            self._ensure_dir(target.parent)
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_directory(target.parent)
        return target

    def move_to_quarantine(self, path: Path, study_uid: str, sop_uid: str) -> Path:
        target = self.quarantine / study_uid / f"{sop_uid}.dcm"
        if not path.exists() and target.exists():
            return target  # moved before a crash; the store did not record it yet
        self._ensure_dir(target.parent)
        os.replace(path, target)
        fsync_directory(target.parent)
        return target

    def probe_write(self) -> None:
        """Write, fsync and delete a 4 KiB file: raises OSError when the storage folder
        cannot take a write (full, read-only, failing)."""
        probe = self.incoming / "probe.part"
        try:
            with probe.open("wb") as handle:
                handle.write(bytes(4096))
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            probe.unlink(missing_ok=True)

    def free_mb(self) -> float:
        return shutil.disk_usage(self.root).free / 2**20

    def clear_incoming(self, older_than_s: float = 0.0) -> int:
        """Delete half-written files left by a crash (never acknowledged): our ``.part``
        files and pynetdicom's streamed ``.dcm`` ones; return how many.

        ``older_than_s``: only those (a spool shared by several ingest nodes holds the
        others' files in flight)."""
        removed = 0
        cutoff = time.time() - older_than_s
        for leftover in [*self.incoming.glob("*.part"), *self.incoming.glob("*.dcm")]:
            try:
                if older_than_s and leftover.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def _ensure_dir(self, folder: Path) -> None:
        if folder in self._known_dirs:
            return
        if len(self._known_dirs) > MAX_REMEMBERED_DIRS:
            self._known_dirs.clear()  # a cache: forgetting only costs an is_dir() call
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            # the new folder's entry in its parent must survive a crash too
            fsync_directory(folder.parent)
        self._known_dirs.add(folder)
