"""The label store: corrected masks on disk, ready for ``cxr train --datalist``.

Layout (every path in the datalist is relative to ``datalist.json``)::

    <root>/
      datalist.json                      MONAI datalist, rebuilt from entries/ on each write
      images/<key>.png                   16-bit grayscale, presentation pixels (no header)
      labels/final/<key>_<segment>.png   the reader's corrected masks (what training uses)
      labels/original/<key>_<segment>.png  the model's output, kept apart for comparison
      seg/<key>.dcm                      DICOM-SEG of the corrected masks (DICOM sources)
      entries/<key>.json                 who, when, model version, edited segments

An image is identified by its SOP Instance UID when it came from DICOM, else by a hash of
its pixels, so exporting it again replaces its entry instead of adding a second one. A
segment missing from an entry is *unknown* for that image (left out of the loss); an
empty mask is a known absence. Files are written to a temporary name and renamed, so a
crash never leaves a half-written image, mask or datalist behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cxr_core.terminology import SEGMENT_TYPES

try:  # POSIX
    import fcntl
except ImportError:  # Windows, where Slicer users often are
    fcntl = None  # type: ignore[assignment]
    import msvcrt

DATALIST_NAME = "datalist.json"
SPLITS = {"train": "training", "val": "validation", "test": "test"}
UINT16_MAX = 65535


@dataclass
class LabelEntry:
    """What the store records about one exported image (``entries/<key>.json``).

    Attributes
    ----------
    key:
        File stem shared by the image, its masks and its SEG.
    source_name:
        A display name (volume or file name); not used for identity.
    source_sop_instance_uid:
        The DICOM source's SOP Instance UID, or ``None`` for image files.
    exported_by, exported_at:
        Who exported it and when (UTC, ISO 8601).
    model:
        ``name@version`` of the model whose output was corrected (``None`` if drawn
        from scratch), with ``model_sha256`` the first 16 hex digits of its weights.
    segments:
        Segments exported as final labels.
    edited:
        Segments whose final mask differs from the model's, with the number of pixels
        added and removed.
    """

    key: str
    source_name: str
    source_sop_instance_uid: str | None
    rows: int
    columns: int
    exported_by: str
    exported_at: str
    model: str | None
    model_sha256: str | None
    segments: list[str]
    edited: dict[str, dict[str, int]]
    split: str = "train"
    pixel_spacing: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


def image_key(*, sop_instance_uid: str | None = None, pixels: np.ndarray | None = None) -> str:
    """A stable, non-identifying key for an image.

    Parameters
    ----------
    sop_instance_uid:
        Used when the image came from DICOM (the same instance always maps to one key).
    pixels:
        Otherwise the pixel values and shape are hashed.
    """
    if sop_instance_uid:
        digest = hashlib.sha256(f"sop:{sop_instance_uid}".encode()).hexdigest()
    elif pixels is not None:
        contiguous = np.ascontiguousarray(pixels, dtype=np.float32)
        digest = hashlib.sha256(str(contiguous.shape).encode() + contiguous.tobytes()).hexdigest()
    else:
        raise ValueError("image_key: give sop_instance_uid or pixels")
    return f"cxr-{digest[:16]}"


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second (the store's timestamp format)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def edit_summary(final: Mapping[str, np.ndarray],
                 original: Mapping[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Per segment, pixels added to and removed from the model's mask (edited ones only).

    A segment with no original mask counts as drawn from scratch (every pixel added).
    """
    edited = {}
    for name, mask in final.items():
        before = original.get(name)
        before = np.zeros_like(mask, dtype=bool) if before is None else before.astype(bool)
        added, removed = int((mask & ~before).sum()), int((before & ~mask).sum())
        if added or removed or name not in original:
            edited[name] = {"added": added, "removed": removed}
    return edited


class LabelStore:
    """Read and write a label store rooted at ``root`` (created on first write).

    Parameters
    ----------
    root:
        The store's folder.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def datalist_path(self) -> Path:
        return self.root / DATALIST_NAME

    def entry_path(self, key: str) -> Path:
        return self.root / "entries" / f"{key}.json"

    def entries(self) -> list[LabelEntry]:
        """Every entry, sorted by key."""
        folder = self.root / "entries"
        if not folder.is_dir():
            return []
        return [LabelEntry(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]

    def get(self, key: str) -> LabelEntry | None:
        path = self.entry_path(key)
        return LabelEntry(**json.loads(path.read_text())) if path.is_file() else None

    def write(
        self,
        *,
        key: str,
        pixels: np.ndarray,
        final_masks: Mapping[str, np.ndarray],
        original_masks: Mapping[str, np.ndarray],
        metadata: Mapping[str, Any],
        seg_bytes: bytes | None = None,
    ) -> LabelEntry:
        """Add an image's labels, replacing any earlier export of the same ``key``.

        Parameters
        ----------
        key:
            From :func:`image_key`.
        pixels:
            The radiograph, 2D (rows, columns), MONOCHROME2.
        final_masks:
            Corrected masks by segment name (``SEGMENT_TYPES`` names), same shape as
            ``pixels``.
        original_masks:
            The model's masks by segment name (may be empty when drawn from scratch).
        metadata:
            ``source_name``, ``source_sop_instance_uid``, ``exported_by``, ``model``,
            ``model_sha256``; optionally ``exported_at`` (default: now), ``split``
            (``train``/``val``/``test``) and ``pixel_spacing``.
        seg_bytes:
            An encoded DICOM-SEG of the final masks, if any.
        """
        _validate_write(key, pixels, final_masks, original_masks, metadata)
        finals = {n: np.asarray(m, dtype=bool) for n, m in final_masks.items()}
        originals = {n: np.asarray(m, dtype=bool) for n, m in original_masks.items()}
        with self._locked():
            previous = self.get(key)
            files = self._write_files(key, pixels, finals, originals, seg_bytes)
            entry = LabelEntry(
                key=key, rows=int(pixels.shape[0]), columns=int(pixels.shape[1]),
                source_name=str(metadata["source_name"]),
                source_sop_instance_uid=metadata.get("source_sop_instance_uid"),
                exported_by=str(metadata["exported_by"]),
                exported_at=str(metadata.get("exported_at") or utc_now()),
                model=metadata.get("model"), model_sha256=metadata.get("model_sha256"),
                segments=sorted(finals, key=_segment_order),
                edited=edit_summary(finals, originals),
                split=str(metadata.get("split", "train")),
                pixel_spacing=dict(metadata.get("pixel_spacing") or {}), files=files,
            )
            if previous is not None:
                self._remove_stale_files(previous, files)
            _atomic_write_text(self.entry_path(key), json.dumps(asdict(entry), indent=2) + "\n")
            self._write_datalist()
        return entry

    def remove(self, key: str) -> None:
        """Forget an entry and its files (a no-op for an unknown key)."""
        with self._locked():
            entry = self.get(key)
            if entry is None:
                return
            self._remove_stale_files(entry, {})
            self.entry_path(key).unlink()
            self._write_datalist()

    def datalist(self) -> dict[str, list[dict[str, str]]]:
        """The MONAI datalist of the current entries (final labels only)."""
        document: dict[str, list[dict[str, str]]] = {name: [] for name in SPLITS.values()}
        for entry in self.entries():
            item = {"id": entry.key, "image": entry.files["image"]}
            item |= {name: entry.files[f"final:{name}"] for name in entry.segments}
            document[SPLITS[entry.split]].append(item)
        return document

    def _write_files(self, key: str, pixels: np.ndarray, finals: dict[str, np.ndarray],
                     originals: dict[str, np.ndarray], seg_bytes: bytes | None) -> dict[str, str]:
        files = {"image": f"images/{key}.png"}
        _atomic_write_png(self.root / files["image"], _to_uint16(pixels))
        for kind, masks in (("final", finals), ("original", originals)):
            for name, mask in masks.items():
                files[f"{kind}:{name}"] = f"labels/{kind}/{key}_{name}.png"
                _atomic_write_png(self.root / files[f"{kind}:{name}"],
                                  mask.astype(np.uint8) * 255)
        if seg_bytes is not None:
            files["seg"] = f"seg/{key}.dcm"
            _atomic_write_bytes(self.root / files["seg"], seg_bytes)
        return files

    def _remove_stale_files(self, previous: LabelEntry, current: dict[str, str]) -> None:
        """Delete files of an earlier export that this one no longer has (e.g. a segment
        the reader deleted), so the store never mixes two exports of one image."""
        for role, relative in previous.files.items():
            if current.get(role) != relative:
                (self.root / relative).unlink(missing_ok=True)

    def _write_datalist(self) -> None:
        _atomic_write_text(self.datalist_path, json.dumps(self.datalist(), indent=2) + "\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two Slicer sessions may share a store on a network disk)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as handle:
            _lock_file(handle, locked=True)
            try:
                yield
            finally:
                _lock_file(handle, locked=False)


def _lock_file(handle: Any, *, locked: bool) -> None:
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_EX if locked else fcntl.LOCK_UN)
    else:  # msvcrt locks a byte range; LK_LOCK retries for 10 s, then raises OSError
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK if locked else msvcrt.LK_UNLCK, 1)


def _validate_write(key: str, pixels: np.ndarray, finals: Mapping[str, np.ndarray],
                    originals: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> None:
    if not key or not all(c.isalnum() or c in "-_." for c in key) or key.startswith("."):
        raise ValueError(f"key: {key!r} is not a safe file stem")
    if pixels.ndim != 2:
        raise ValueError(f"pixels: expected a 2D array, got shape {pixels.shape}")
    if not finals:
        raise ValueError("final_masks: at least one segment is needed")
    for argument, masks in (("final_masks", finals), ("original_masks", originals)):
        for name, mask in masks.items():
            if name not in SEGMENT_TYPES:
                raise ValueError(f"{argument}: unknown segment {name!r} "
                                 f"(known: {', '.join(SEGMENT_TYPES)})")
            if np.shape(mask) != pixels.shape:
                raise ValueError(f"{argument}[{name!r}]: shape {np.shape(mask)} differs from "
                                 f"pixels {pixels.shape}")
    for required in ("source_name", "exported_by"):
        if not metadata.get(required):
            raise ValueError(f"metadata: {required!r} is required")
    split = metadata.get("split", "train")
    if split not in SPLITS:
        raise ValueError(f"metadata: split {split!r} is not one of {', '.join(SPLITS)}")


def _segment_order(name: str) -> int:
    return list(SEGMENT_TYPES).index(name)


def _to_uint16(pixels: np.ndarray) -> np.ndarray:
    """Linear min-max to 16 bits: training normalises by percentiles, so only the order
    and ratios of values matter, and 16 bits keep a 12-bit detector's depth."""
    low, high = float(np.min(pixels)), float(np.max(pixels))
    scale = UINT16_MAX / (high - low) if high > low else 0.0
    return np.round((pixels.astype(np.float64) - low) * scale).astype(np.uint16)


def _atomic_write_png(path: Path, array: np.ndarray) -> None:
    with _atomic_target(path) as temporary:
        Image.fromarray(array).save(temporary, format="PNG")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with _atomic_target(path) as temporary:
        temporary.write_bytes(data)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` after an fsync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
