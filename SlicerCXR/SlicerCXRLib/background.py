"""Heavy work in a background process: launch, progress, cancel, result pick-up (no Qt).

As SlicerMONAIAuto3DSeg's ``process.py`` does, the analysis of a folder (``cxr
analyze``) and retraining (``cxr train lung``) run as a separate process, so Slicer's
GUI thread stays free and a crash cannot take the scene down. A reader thread collects
the process's output lines (tqdm's carriage-return updates count as lines);
:meth:`BackgroundProcess.poll`, called from a GUI timer, hands over the new lines and
the progress parsed from them; :meth:`BackgroundProcess.cancel` stops the process and
its children.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TQDM_PROGRESS = re.compile(r"(\d+)/(\d+) \[")
"""tqdm's ``done/total [`` (``analyzing:  40%|####  | 2/5 [00:03<00:04, ...]``)."""
RESULT_LINE = re.compile(r"^(analyzed|refused|failed) ")
"""``cxr analyze``'s one line per input."""


@dataclass
class Progress:
    """What the process has reported so far."""

    done: int = 0
    total: int | None = None
    lines: list[str] = field(default_factory=list)
    """Every output line so far (for the log)."""

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None


class BackgroundProcess:
    """One command running in its own process group.

    Parameters
    ----------
    command:
        The program and its arguments.
    total:
        How many items the command works through, when known (e.g. the inputs of
        ``cxr analyze``); tqdm's own total is used otherwise.
    env:
        Extra environment variables.
    """

    def __init__(self, command: Sequence[str], *, total: int | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.command = [str(part) for part in command]
        self.progress = Progress(total=total)
        self._fixed_total = total is not None
        self._env = dict(env or {})
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.cancelled = False

    def start(self) -> BackgroundProcess:
        """Launch the command (its output merged, unbuffered)."""
        environment = os.environ | {"PYTHONUNBUFFERED": "1"} | self._env
        extra = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
                 if sys.platform == "win32" else {"start_new_session": True})
        self._process = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, env=environment, **extra)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while running."""
        return None if self._process is None else self._process.poll()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def poll(self) -> list[str]:
        """The output lines since the last call; :attr:`progress` updated from them."""
        new: list[str] = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                new.append(line)
        for line in new:
            self._parse(line)
        self.progress.lines += new
        return new

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end (and its output to be read); its exit status."""
        if self._process is None:
            raise RuntimeError("wait: the process was never started")
        code = self._process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        self.poll()
        return code

    def cancel(self, grace: float = 5.0) -> None:
        """Stop the process and its children: terminate, then kill after ``grace`` s."""
        if not self.running or self._process is None:
            return
        self.cancelled = True
        self._signal(signal.SIGTERM)
        try:
            self._process.wait(grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
            self._process.wait(grace)

    def _signal(self, number: int) -> None:
        assert self._process is not None
        if sys.platform == "win32":
            self._process.terminate()
            return
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.killpg(self._process.pid, number)

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        pending = b""
        for chunk in iter(lambda: self._process.stdout.read1(4096), b""):  # type: ignore[union-attr]
            pending += chunk
            *complete, pending = re.split(rb"[\r\n]", pending)
            for raw in complete:
                if raw.strip():
                    self._lines.put(raw.decode(errors="replace").rstrip())
        if pending.strip():
            self._lines.put(pending.decode(errors="replace").rstrip())
        self._lines.put(None)

    def _parse(self, line: str) -> None:
        if RESULT_LINE.match(line) and self._fixed_total:
            self.progress.done += 1
            return
        match = TQDM_PROGRESS.search(line)
        if match and not self._fixed_total:
            self.progress.done, self.progress.total = int(match[1]), int(match[2])


def analyze_command(inputs: Sequence[Path | str], out_dir: Path | str, *,
                    python: str | None = None, models_dir: Path | str | None = None,
                    pins: Mapping[str, str] | None = None,
                    pixel_spacing: str | None = None) -> list[str]:
    """The ``cxr analyze`` command for ``inputs`` into ``out_dir`` (``review.csv`` too),
    with the models folder, pinned model versions and image files' spacing given."""
    if not inputs:
        raise ValueError("inputs: nothing to analyse")
    command = [python or sys.executable, "-m", "cxr_core.cli", "analyze",
               *(str(p) for p in inputs), "--out", str(out_dir)]
    command += ["--models-dir", str(models_dir)] if models_dir else []
    for name, version in (pins or {}).items():
        command += ["--pin", f"{name}@{version}"]
    return command + (["--pixel-spacing", pixel_spacing] if pixel_spacing else [])

