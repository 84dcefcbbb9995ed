"""The review worklist over Slicer's DICOM database: analysed radiographs, worst first.

A radiograph counts as analysed when the database holds an SR that SlicerCXR wrote
about it (as the DICOM node sends to a PACS or to Slicer's DICOM listener, or as ``cxr
analyze`` writes for a DICOM input and the DICOM browser imports): the SR carries each
mask's agreement, so the cases sort exactly as ``review.csv`` sorts a results folder.
Opening a case loads the radiograph, our SEG that the SR references (as an editable
segmentation, the model output kept aside for export) and a table of the SR's
measurements; nothing is re-analysed.

The database is read from the SQLite file ctkDICOMDatabase keeps (``ctkDICOM.sql`` in
Slicer's DICOM database folder; CTK ``Libs/DICOM/Core/Resources/dicom-schema.sql``):
the ``Images`` table (SOPInstanceUID, Filename, SeriesInstanceUID) and ``Series``
(SeriesInstanceUID, Modality), read-only. Filenames of files copied into the database
are relative to its folder, linked files keep their absolute path, as
``ctkDICOMDatabase::absolutePathFromInternal`` resolves them. Reading the file rather
than ``slicer.dicomDatabase`` keeps this module free of Qt and testable outside Slicer
(the ``slicer-core`` wheel has no ctkDICOMDatabase).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pydicom
import slicer

import cxr_core
from SlicerCXRLib.scene_bridge import load_radiograph_volume, show_in_slice_views
from SlicerCXRLib.seg_loading import find_source_volume, load_seg
from SlicerCXRLib.worklist import ANALYZED, CaseList, OpenedCase, rows_table

DATABASE_FILE = "ctkDICOM.sql"
"""The SQLite file in Slicer's DICOM database folder."""
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX"})
"""Series that hold projection radiographs (what the engine analyses)."""
NOT_ANALYZED = "not analyzed"
INCOMPLETE = "incomplete"


@dataclass
class DatabaseInstance:
    """One row of the database's ``Images`` table, with its series' modality."""

    sop_instance_uid: str
    path: Path
    modality: str


@dataclass
class DatabaseResult:
    """Where one analysed radiograph's results are."""

    source: Path
    seg: Path
    sr: cxr_core.SrContent


def database_file(database: Path | str) -> Path:
    """The SQLite file of a database given as its folder or as the file itself.

    Raises
    ------
    ValueError
        When there is no database there.
    """
    path = Path(database)
    path = path / DATABASE_FILE if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"database: no {DATABASE_FILE} in {database} "
                         "(choose Slicer's DICOM database folder)")
    return path


def database_instances(database: Path | str) -> list[DatabaseInstance]:
    """Every instance the database lists, with its absolute path.

    Raises
    ------
    ValueError
        When the file is not a DICOM database.
    """
    path = database_file(database)
    try:  # read-only: Slicer may have the database open
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT Images.SOPInstanceUID, Images.Filename, Series.Modality FROM Images "
                "LEFT JOIN Series ON Images.SeriesInstanceUID = Series.SeriesInstanceUID"
            ).fetchall()
    except sqlite3.DatabaseError as error:
        raise ValueError(f"database: {path.name} is not a DICOM database ({error})") from None
    folder = path.parent
    return [DatabaseInstance(str(uid), _absolute(str(name), folder), str(modality or ""))
            for uid, name, modality in rows]


def _absolute(filename: str, folder: Path) -> Path:
    """A database filename as a path: relative ones lie in the database folder."""
    path = Path(filename)
    return path if path.is_absolute() else folder / path


class DatabaseWorklist(CaseList):
    """The radiographs of a DICOM database that SlicerCXR analysed, worst first.

    Parameters
    ----------
    database:
        Slicer's DICOM database folder or its ``ctkDICOM.sql``
        (``slicer.dicomDatabase.databaseFilename``).

    Attributes
    ----------
    not_analyzed:
        Radiographs (CR/DX series) with no SR of ours, and SRs whose radiograph or SEG
        is not in the database, saying which.
    """

    def __init__(self, database: Path | str) -> None:
        self.database = database_file(database)
        instances = database_instances(self.database)
        by_uid = {instance.sop_instance_uid: instance.path for instance in instances}
        reports = _latest_reports(instance.path for instance in instances
                                  if instance.modality == "SR")
        self.results: dict[str, DatabaseResult] = {}
        """By case (``ReviewRow.input``): its files and SR content."""
        cases, not_analyzed = [], []
        for source_uid, report in reports.items():
            row, result = _case(report, by_uid.get(source_uid),
                                by_uid.get(report.seg_sop_instance_uid or ""))
            if result is None:
                not_analyzed.append(row)
                continue
            self.results[row.input] = result
            cases.append(row)
        not_analyzed += [cxr_core.ReviewRow.not_analyzed(instance.path, NOT_ANALYZED,
                                                         "no SlicerCXR SR in the database")
                         for instance in instances
                         if instance.modality in RADIOGRAPH_MODALITIES
                         and instance.sop_instance_uid not in reports]
        super().__init__(cxr_core.review_order(cases), not_analyzed)

    def unanalysed_files(self) -> list[Path]:
        """The radiographs with no SR of ours (to analyse them)."""
        return [Path(row.input) for row in self.not_analyzed if row.status == NOT_ANALYZED]

    def open(self, scene: slicer.vtkMRMLScene, row: cxr_core.ReviewRow,
             volume: slicer.vtkMRMLScalarVolumeNode | None = None) -> OpenedCase:
        """Load ``row``'s radiograph (unless it is already in the scene), our SEG on it
        and a table of the SR's measurements."""
        result = self.results[row.input]
        uid = result.sr.source_sop_instance_uid or ""
        volume = volume or find_source_volume(scene, uid) or load_radiograph_volume(
            scene, result.source)
        segmentation = load_seg(scene, result.seg, volume)
        segmentation.SetName(f"{volume.GetName()} segments")
        table = rows_table(scene, report_rows(result.sr), f"{volume.GetName()} results")
        show_in_slice_views(scene, volume, None)
        return OpenedCase(row, volume, segmentation, table, list(result.sr.models))


def _latest_reports(paths: Iterable[Path]) -> dict[str, cxr_core.SrContent]:
    """Our SRs by the radiograph they report on; the latest when there are several (a
    re-analysis, another model version)."""
    latest: dict[str, cxr_core.SrContent] = {}
    for path in paths:
        report = _read_own_sr(path)
        uid = report.source_sop_instance_uid if report is not None else None
        if report is None or uid is None:
            continue
        if uid not in latest or report.content_datetime > latest[uid].content_datetime:
            latest[uid] = report
    return latest


def _read_own_sr(path: Path) -> cxr_core.SrContent | None:
    """The SR's content when SlicerCXR wrote it; None for anyone else's, or a lost file."""
    try:
        return cxr_core.read_sr(path)
    except (cxr_core.RefusedInput, OSError, pydicom.errors.InvalidDicomError):
        return None


def _case(report: cxr_core.SrContent, source: Path | None, seg: Path | None
          ) -> tuple[cxr_core.ReviewRow, DatabaseResult | None]:
    """The worklist row of one SR; no result when its radiograph or SEG is missing."""
    missing = ("its radiograph is not in the database" if source is None
               else "its radiograph's file is missing" if not source.is_file()
               else "its SEG is not in the database" if seg is None
               else "its SEG's file is missing" if not seg.is_file() else "")
    if missing or source is None or seg is None:
        return cxr_core.ReviewRow.not_analyzed(source or Path(report.sop_instance_uid),
                                               INCOMPLETE, f"SlicerCXR SR: {missing}"), None
    quality = report.quality
    row = cxr_core.ReviewRow(str(source.resolve()), "", report.review_score,
                             quality.get("right_lung"), quality.get("left_lung"),
                             quality.get("heart"), ANALYZED)
    return row, DatabaseResult(source, seg, report)


def report_rows(report: cxr_core.SrContent) -> list[tuple[str, str, float, str, str]]:
    """The SR's measurements, finding probabilities and models as table rows (kind,
    name, value, unit, derivation), as the folder worklist's table has them."""
    rows = []
    for m in report.measurements:
        finding = m.segment is None and m.group.startswith("Finding: ")
        rows.append(("finding" if finding else "measurement", f"{m.group}: {m.meaning}",
                     m.value, m.unit, m.method))
    rows += [("model", model, float("nan"), "", "Device Observer of the SR")
             for model in report.models]
    return rows
