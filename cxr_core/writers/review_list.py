"""``review.csv``: a run's radiographs, the masks least to be trusted first.

``cxr analyze --out DIR`` writes it beside the per-image folders; the Slicer worklist
reads it. One row per input: the analysed ones sorted by their review score (the worst
lung's mask agreement, :mod:`cxr_core.mask_quality`), lowest first; then those with no
score (refused or failed), in input order, saying why.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cxr_core.analysis import Analysis
from cxr_core.mask_quality import worst_first

REVIEW_CSV = "review.csv"


@dataclass
class ReviewRow:
    """One input of a run.

    Attributes
    ----------
    input:
        The file analysed (as given, resolved).
    folder:
        Its output folder under the run's ``--out`` ('' when nothing was written).
    review_score:
        The worst lung's mask agreement, or None.
    right_lung, left_lung, heart:
        Each mask's agreement, or None.
    status:
        ``analyzed``, ``refused`` or ``failed``.
    note:
        The quality flags of an analysis, or why it was refused or failed.
    """

    input: str
    folder: str
    review_score: float | None
    right_lung: float | None
    left_lung: float | None
    heart: float | None
    status: str
    note: str = ""

    @classmethod
    def analyzed(cls, path: Path, folder: Path, analysis: Analysis) -> ReviewRow:
        quality = {name: segment.quality for name, segment in analysis.segments.items()}
        return cls(str(Path(path).resolve()), folder.name, analysis.review_score,
                   right_lung=quality.get("right_lung"), left_lung=quality.get("left_lung"),
                   heart=quality.get("heart"), status="analyzed",
                   note="; ".join(str(flag) for flag in analysis.quality_flags))

    @classmethod
    def not_analyzed(cls, path: Path, status: str, note: str) -> ReviewRow:
        return cls(str(Path(path).resolve()), "", None, None, None, None, status, note)


def review_order(rows: list[ReviewRow]) -> list[ReviewRow]:
    """``rows`` worst first (lowest review score), rows without a score last."""
    return [rows[i] for i in worst_first([row.review_score for row in rows])]


def write_review(rows: list[ReviewRow], out_dir: Path) -> Path:
    """Write ``out_dir/review.csv`` in :func:`review_order` (replacing it in one rename)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(ReviewRow)])
    writer.writeheader()
    for row in review_order(rows):
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(row).items()})
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / REVIEW_CSV
    handle, name = tempfile.mkstemp(dir=out_dir, prefix=f".{REVIEW_CSV}.", suffix=".tmp")
    with os.fdopen(handle, "w", newline="") as stream:
        stream.write(buffer.getvalue())
    os.replace(name, target)
    return target


def read_review(path: Path) -> list[ReviewRow]:
    """The rows of a ``review.csv`` (a file, or the run folder holding one), in its order.

    Raises
    ------
    ValueError
        When the file is not a review list.
    """
    path = Path(path)
    path = path / REVIEW_CSV if path.is_dir() else path
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        expected = [f.name for f in fields(ReviewRow)]
        if reader.fieldnames is None or list(reader.fieldnames) != expected:
            raise ValueError(f"{path}: not a review list (columns {reader.fieldnames})")
        return [_row(record) for record in reader]


def _row(record: dict[str, str]) -> ReviewRow:
    def number(text: str) -> float | None:
        return float(text) if text else None

    return ReviewRow(record["input"], record["folder"], number(record["review_score"]),
                     number(record["right_lung"]), number(record["left_lung"]),
                     number(record["heart"]), record["status"], record["note"])
