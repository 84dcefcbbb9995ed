"""The Qt-free half of SlicerCXR's DICOM plugin: which files in the DICOM browser are SEGs
of a projection radiograph, and loading one onto its radiograph.

Slicer's own DICOM-SEG plugin (QuantitativeReporting, dcmqi) needs Plane Orientation,
which a SEG without Frame of Reference does not have (PS3.3 Table A.51-2): it offers such
SEGs and then fails. Ours offers them with a higher confidence and reads them through
``cxr_core``'s SEG reader, on the source image's pixel grid. ``examine_files`` reads
headers only (pydicom, no engine), since the browser calls it on every selection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
import slicer

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
CONFIDENCE = 0.99
"""Above QuantitativeReporting's DICOMSegmentationPlugin (0.95 for any SEG), which cannot
load these."""

DicomFileLookup = Callable[[str], str]


@dataclass
class SegCandidate:
    """What the DICOM browser lists for one SEG file (a ``DICOMLoadable``'s fields)."""

    files: list[str]
    name: str
    tooltip: str
    source_uid: str
    """SOP Instance UID of the radiograph it segments."""
    confidence: float = CONFIDENCE


def examine_files(files: Sequence[str]) -> list[SegCandidate]:
    """One candidate per BINARY SEG without Frame of Reference that segments one image."""
    candidates = []
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM, or unreadable: some other plugin's business
            continue
        source_uid = _single_source(header)
        if source_uid is None:
            continue
        label = str(header.get("SeriesDescription") or header.get("ContentLabel") or "SEG")
        candidates.append(SegCandidate(
            files=[str(path)], name=f"{header.get('SeriesNumber', '')}: {label}".strip(": "),
            tooltip="Segmentation of a radiograph (no Frame of Reference), read by SlicerCXR",
            source_uid=source_uid))
    return candidates


def _single_source(header: pydicom.Dataset) -> str | None:
    """The one referenced image of a BINARY SEG without Frame of Reference, else None."""
    if (str(header.get("SOPClassUID", "")) != SEGMENTATION_STORAGE
            or "FrameOfReferenceUID" in header
            or header.get("SegmentationType") != "BINARY"):
        return None
    instances = [instance for series in header.get("ReferencedSeriesSequence", [])
                 for instance in series.get("ReferencedInstanceSequence", [])]
    if len(instances) != 1:
        return None
    return str(instances[0].ReferencedSOPInstanceUID)


def load_candidate(scene: slicer.vtkMRMLScene, candidate: SegCandidate,
                   dicom_file_for_uid: DicomFileLookup | None = None
                   ) -> slicer.vtkMRMLSegmentationNode:
    """Add the SEG's segments on its radiograph, loading the radiograph first (through
    ``dicom_file_for_uid``, e.g. ``slicer.dicomDatabase.fileForInstance``) when it is not
    in the scene.

    Raises
    ------
    ValueError
        When the radiograph is neither in the scene nor found in the database.
    """
    from SlicerCXRLib.scene_bridge import load_radiograph_volume  # imports the engine
    from SlicerCXRLib.seg_loading import find_source_volume, load_seg

    volume = find_source_volume(scene, candidate.source_uid)
    if volume is None:
        source_file = dicom_file_for_uid(candidate.source_uid) if dicom_file_for_uid else ""
        if not source_file:
            raise ValueError(f"candidate: its radiograph ({candidate.source_uid}) is neither "
                             "loaded nor in the DICOM database")
        volume = load_radiograph_volume(scene, Path(source_file))
    return load_seg(scene, candidate.files[0], volume)
