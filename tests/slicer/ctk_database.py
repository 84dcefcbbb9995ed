"""A Slicer DICOM database built from real DICOM files, as ctkDICOMDatabase builds one.

The ``slicer-core`` wheel has no ctkDICOMDatabase (it is part of CTK's Qt libraries), so
the tests write its SQLite file themselves: the four tables and columns of CTK's
documented schema (``Libs/DICOM/Core/Resources/dicom-schema.sql``, SchemaInfo 0.7.0) and
rows filled from each file's header, as ``ctkDICOMDatabase::insert`` fills them. A file
*copied* into the database lies in ``dicom/<study>/<series>/<instance>`` and is recorded
by that relative path; a *linked* file keeps its absolute path (Slicer's "Add link").
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pydicom

SCHEMA = """
CREATE TABLE SchemaInfo (Version VARCHAR(1024) NOT NULL);
INSERT INTO SchemaInfo VALUES ('0.7.0');
CREATE TABLE Images (
  SOPInstanceUID VARCHAR(64) NOT NULL, Filename VARCHAR(1024) NOT NULL,
  SeriesInstanceUID VARCHAR(64) NOT NULL, InsertTimestamp VARCHAR(20) NOT NULL,
  DisplayedFieldsUpdatedTimestamp DATETIME NULL, PRIMARY KEY (SOPInstanceUID));
CREATE TABLE Patients (
  UID INTEGER PRIMARY KEY AUTOINCREMENT, PatientsName VARCHAR(255) NULL,
  PatientID VARCHAR(255) NULL, PatientsBirthDate DATE NULL, PatientsBirthTime TIME NULL,
  PatientsSex VARCHAR(1) NULL, PatientsAge VARCHAR(10) NULL,
  PatientsComments VARCHAR(255) NULL, InsertTimestamp VARCHAR(20) NOT NULL,
  DisplayedPatientsName VARCHAR(255) NULL, DisplayedNumberOfStudies INT NULL,
  DisplayedLastStudyDate DATE NULL, DisplayedFieldsUpdatedTimestamp DATETIME NULL);
CREATE TABLE Studies (
  StudyInstanceUID VARCHAR(64) NOT NULL, PatientsUID INT NOT NULL, StudyID VARCHAR(255) NULL,
  StudyDate DATE NULL, StudyTime VARCHAR(20) NULL, StudyDescription VARCHAR(255) NULL,
  AccessionNumber VARCHAR(255) NULL, ModalitiesInStudy VARCHAR(255) NULL,
  InstitutionName VARCHAR(255) NULL, ReferringPhysician VARCHAR(255) NULL,
  PerformingPhysiciansName VARCHAR(255) NULL, InsertTimestamp VARCHAR(20) NOT NULL,
  DisplayedNumberOfSeries INT NULL, DisplayedFieldsUpdatedTimestamp DATETIME NULL,
  PRIMARY KEY (StudyInstanceUID));
CREATE TABLE Series (
  SeriesInstanceUID VARCHAR(64) NOT NULL, StudyInstanceUID VARCHAR(64) NOT NULL,
  SeriesNumber INT NULL, SeriesDate DATE NULL, SeriesTime VARCHAR(20) NULL,
  SeriesDescription VARCHAR(255) NULL, Modality VARCHAR(20) NULL,
  BodyPartExamined VARCHAR(255) NULL, FrameOfReferenceUID VARCHAR(64) NULL,
  AcquisitionNumber INT NULL, ContrastAgent VARCHAR(255) NULL,
  ScanningSequence VARCHAR(45) NULL, EchoNumber INT NULL, TemporalPosition INT NULL,
  InsertTimestamp VARCHAR(20) NOT NULL, DisplayedCount INT NULL,
  DisplayedSize VARCHAR(20) NULL, DisplayedNumberOfFrames INT NULL,
  DisplayedFieldsUpdatedTimestamp DATETIME NULL, PRIMARY KEY (SeriesInstanceUID));
CREATE UNIQUE INDEX ImagesFilenameIndex ON Images (Filename);
CREATE INDEX ImagesSeriesIndex ON Images (SeriesInstanceUID);
CREATE INDEX SeriesStudyIndex ON Series (StudyInstanceUID);
CREATE INDEX StudiesPatientIndex ON Studies (PatientsUID);
"""
NOW = "2026-11-29T12:00:00"


def create_database(folder: Path) -> Path:
    """An empty database in ``folder``; its ``ctkDICOM.sql``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ctkDICOM.sql"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA)
    return path


def insert(database: Path, file: Path, *, copy: bool) -> Path:
    """Add one DICOM file (copied in, or linked where it is); where it now is."""
    header = pydicom.dcmread(file, stop_before_pixels=True)
    study, series, sop = (str(header.StudyInstanceUID), str(header.SeriesInstanceUID),
                          str(header.SOPInstanceUID))
    target = file.resolve()
    filename = str(target)
    if copy:
        relative = Path("dicom", study, series, sop)
        target = database.parent / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
        filename = relative.as_posix()
    with closing(sqlite3.connect(database)) as db, db:
        db.execute("INSERT INTO Patients (PatientID, PatientsName, InsertTimestamp) "
                   "VALUES (?, ?, ?)", (str(header.get("PatientID", "")),
                                        str(header.get("PatientName", "")), NOW))
        patient = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        db.execute("INSERT OR IGNORE INTO Studies (StudyInstanceUID, PatientsUID, "
                   "InsertTimestamp) VALUES (?, ?, ?)", (study, patient, NOW))
        db.execute("INSERT OR IGNORE INTO Series (SeriesInstanceUID, StudyInstanceUID, "
                   "Modality, SeriesNumber, InsertTimestamp) VALUES (?, ?, ?, ?, ?)",
                   (series, study, str(header.get("Modality", "")),
                    header.get("SeriesNumber"), NOW))
        db.execute("INSERT INTO Images (SOPInstanceUID, Filename, SeriesInstanceUID, "
                   "InsertTimestamp) VALUES (?, ?, ?, ?)", (sop, filename, series, NOW))
    return target
