"""Between the MRML scene and the engine: volumes <-> Radiograph, Analysis -> nodes.

No Qt here: every function takes the scene (``slicer.mrmlScene`` in Slicer, a fresh
``vtkMRMLScene`` in tests) and returns nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import vtk
from PIL import Image

from cxr_core import (
    IMAGE_SUFFIXES,
    SEGMENT_TYPES,
    Analysis,
    Finding,
    PixelSpacing,
    Radiograph,
    SegmentType,
    SpacingSource,
    read_radiograph,
    safe_folder_name,
)
from SlicerCXRLib.mrml import (
    ensure_segmentation_converters,
    mask_to_oriented_image,
    radiograph_shape,
    set_radiograph_geometry,
    set_volume_pixels,
    volume_pixels,
    volume_spacing,
)

# Node attributes. DICOM.instanceUIDs is the one Slicer's DICOM module sets.
SOURCE_PATH_ATTRIBUTE = "SlicerCXR.sourcePath"
SPACING_SOURCE_ATTRIBUTE = "SlicerCXR.spacingSource"
DICOM_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
MODEL_ATTRIBUTE = "SlicerCXR.model"
MODEL_SHA_ATTRIBUTE = "SlicerCXR.modelSha256"
FINDING_ATTRIBUTE = "SlicerCXR.finding"
# The model's own masks, kept in a hidden segmentation referenced from the one the reader
# edits, so an export (even after saving and reopening the scene) knows what changed.
MODEL_OUTPUT_REFERENCE = "SlicerCXR.modelOutput"
SEGMENT_NAME_TAG = "SlicerCXR.name"

TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
HEAT_COLOR_TABLE = "SlicerCXR heat map"
HEAT_OPACITY = 0.5

DicomFileLookup = Callable[[str], str | None]
"""SOP Instance UID -> file path (``slicer.dicomDatabase.fileForInstance`` in Slicer)."""


@dataclass
class AnalysisNodes:
    """The nodes :func:`show_analysis` adds for one analysis."""

    segmentation: slicer.vtkMRMLSegmentationNode
    table: slicer.vtkMRMLTableNode
    heatmaps: dict[str, slicer.vtkMRMLScalarVolumeNode] = field(default_factory=dict)


def load_radiograph_volume(scene: slicer.vtkMRMLScene, path: Path | str,
                           name: str | None = None) -> slicer.vtkMRMLScalarVolumeNode:
    """Read a DICOM or image file with the engine's reader and add it as a volume.

    The volume remembers its file (and SOP Instance UID) so :func:`volume_to_radiograph`
    gets the DICOM header back.
    """
    radiograph = read_radiograph(Path(path))
    node = radiograph_to_volume(scene, radiograph, name=name or Path(path).stem)
    node.SetAttribute(SOURCE_PATH_ATTRIBUTE, str(Path(path).resolve()))
    return node


def radiograph_to_volume(scene: slicer.vtkMRMLScene, radiograph: Radiograph,
                         name: str | None = None) -> slicer.vtkMRMLScalarVolumeNode:
    """A single-slice scalar volume with the radiograph's pixels and spacing."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or radiograph.id)
    set_volume_pixels(node, radiograph.pixels.astype(np.float32))
    spacing = radiograph.spacing
    set_radiograph_geometry(node, spacing.row_mm or 1.0, spacing.column_mm or 1.0)
    node.SetAttribute(SPACING_SOURCE_ATTRIBUTE, spacing.source.value)
    if radiograph.source_dataset is not None:
        node.SetAttribute(DICOM_UIDS_ATTRIBUTE, str(radiograph.source_dataset.SOPInstanceUID))
    node.CreateDefaultDisplayNodes()
    return node


def volume_to_radiograph(volume_node: slicer.vtkMRMLScalarVolumeNode, *,
                         dicom_file_for_uid: DicomFileLookup | None = None) -> Radiograph:
    """The engine's input for a radiograph shown in Slicer.

    When the volume came from a file the engine can read (DICOM through the DICOM
    database or our loader, or an image file Slicer loaded), the file is read again so
    the pixels are presentation-ready (Modality/VOI LUT, MONOCHROME1 inverted) and the
    DICOM header comes along. Otherwise the voxels are used as they are, with unknown
    spacing unless the volume says where its spacing came from.
    """
    rows, columns = radiograph_shape(volume_node)
    source = source_file(volume_node, dicom_file_for_uid=dicom_file_for_uid)
    name = safe_folder_name(volume_node.GetName() or "radiograph")
    if source is not None:
        radiograph = read_radiograph(source, radiograph_id=name)
        if radiograph.shape != (rows, columns):
            raise ValueError(f"volume_node: {volume_node.GetName()!r} is {rows}x{columns} but "
                             f"its source file {source.name} is "
                             f"{radiograph.shape[0]}x{radiograph.shape[1]}")
        return radiograph
    # no header to trust: the engine's lungs stage still checks the polarity of the pixels
    return Radiograph(pixels=volume_pixels(volume_node), spacing=_declared_spacing(volume_node),
                      id=name)


def source_file(volume_node: slicer.vtkMRMLVolumeNode, *,
                dicom_file_for_uid: DicomFileLookup | None = None) -> Path | None:
    """The file the volume was read from, if the engine can read it too."""
    candidates = [volume_node.GetAttribute(SOURCE_PATH_ATTRIBUTE)]
    uids = (volume_node.GetAttribute(DICOM_UIDS_ATTRIBUTE) or "").split()
    if dicom_file_for_uid is not None and len(uids) == 1:
        candidates.append(dicom_file_for_uid(uids[0]))
    storage = volume_node.GetStorageNode()
    if storage is not None and storage.GetFileName():
        stored = Path(storage.GetFileName())
        if stored.suffix.lower() in IMAGE_SUFFIXES:
            candidates.append(str(stored))
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def write_volume_input(volume_node: slicer.vtkMRMLScalarVolumeNode,
                       folder: Path) -> tuple[Path, str | None]:
    """Write a volume that has no source file as an input ``cxr analyze`` reads back
    unchanged: a float32 TIFF of the same pixels :func:`volume_to_radiograph` hands the
    engine in-process, named after the volume; with the spacing to pass as
    ``--pixel-spacing`` (None when the volume declares none).
    """
    radiograph = volume_to_radiograph(volume_node)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{radiograph.id}.tiff"
    Image.fromarray(radiograph.pixels.astype(np.float32)).save(path)
    spacing = radiograph.spacing
    if spacing.row_mm is None or spacing.source == SpacingSource.UNKNOWN:
        return path, None
    return path, f"{spacing.row_mm!r},{spacing.column_mm!r},{spacing.source.value}"


def _declared_spacing(volume_node: slicer.vtkMRMLVolumeNode) -> PixelSpacing:
    declared = volume_node.GetAttribute(SPACING_SOURCE_ATTRIBUTE)
    if not declared or declared == SpacingSource.UNKNOWN.value:
        # Slicer gives every image file 1 mm voxels: that is not a measurement.
        return PixelSpacing.unknown()
    row_mm, column_mm = volume_spacing(volume_node)
    return PixelSpacing(row_mm, column_mm, SpacingSource(declared))


def terminology_entry(segment_type: SegmentType) -> str:
    """Slicer's serialized terminology entry (category, type, modifier) for a segment."""
    modifier = segment_type.modifier
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        TERMINOLOGY_CONTEXT,
        segment_type.category.value, segment_type.category.scheme_designator,
        segment_type.category.meaning,
        segment_type.property_type.value, segment_type.property_type.scheme_designator,
        segment_type.property_type.meaning,
        modifier.value if modifier else "", modifier.scheme_designator if modifier else "",
        modifier.meaning if modifier else "",
        ANATOMIC_CONTEXT, "", "", "", "", "", "")


def add_segment(segmentation_node: slicer.vtkMRMLSegmentationNode, name: str,
                mask: np.ndarray, volume_node: slicer.vtkMRMLVolumeNode) -> str:
    """Add (or replace) one of our segments from a ``(rows, columns)`` mask.

    The segment ID is our name (``right_lung``), the displayed name its label, and its
    terminology and colour come from :data:`SEGMENT_TYPES`. Returns the segment ID.
    """
    if name not in SEGMENT_TYPES:
        raise ValueError(f"name: unknown segment {name!r} (known: {', '.join(SEGMENT_TYPES)})")
    ensure_segmentation_converters()
    segment_type = SEGMENT_TYPES[name]
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetSegment(name) is None:
        color = [c / 255.0 for c in segment_type.rgb]
        segmentation.AddEmptySegment(name, segment_type.label, color)
    segment = segmentation.GetSegment(name)
    segment.SetTerminology(terminology_entry(segment_type))
    segment.SetTag(SEGMENT_NAME_TAG, name)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(mask_to_oriented_image(mask, volume_node),
                                            segmentation_node, name, logic.MODE_REPLACE):
        raise RuntimeError(f"segment {name!r}: could not set its labelmap")
    return name


def masks_to_segmentation(scene: slicer.vtkMRMLScene, volume_node: slicer.vtkMRMLVolumeNode,
                          masks: dict[str, np.ndarray], *, name: str,
                          hidden: bool = False) -> slicer.vtkMRMLSegmentationNode:
    """A segmentation node on the volume's geometry, one segment per known mask."""
    ensure_segmentation_converters()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.SetHideFromEditors(hidden)
    if not hidden:
        node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    for segment_name in SEGMENT_TYPES:
        if segment_name in masks:
            add_segment(node, segment_name, masks[segment_name], volume_node)
    return node


def analysis_to_segmentation(scene: slicer.vtkMRMLScene, volume_node: slicer.vtkMRMLVolumeNode,
                             analysis: Analysis) -> slicer.vtkMRMLSegmentationNode:
    """The analysis' masks as an editable segmentation, with the model output kept aside."""
    masks = {n: s.mask for n, s in analysis.segments.items()}
    node = masks_to_segmentation(scene, volume_node, masks,
                                 name=f"{volume_node.GetName()} segments")
    model = analysis.mask_models or None
    sha = ", ".join(m.sha256 for m in analysis.models) or None
    record_model_output(scene, node, volume_node, masks, model=model, model_sha256=sha)
    return node


def record_model_output(scene: slicer.vtkMRMLScene,
                        segmentation_node: slicer.vtkMRMLSegmentationNode,
                        volume_node: slicer.vtkMRMLVolumeNode, masks: dict[str, np.ndarray],
                        *, model: str | None,
                        model_sha256: str | None) -> slicer.vtkMRMLSegmentationNode:
    """Keep the model's masks in a hidden segmentation referenced by ``segmentation_node``.

    Parameters
    ----------
    scene, segmentation_node, volume_node:
        The reader's segmentation and its radiograph.
    masks:
        The model's masks by segment name.
    model, model_sha256:
        ``name@version`` and weights digest of the model(s), recorded as node attributes.
    """
    original = masks_to_segmentation(scene, volume_node, masks, hidden=True,
                                     name=f"{segmentation_node.GetName()} (model output)")
    segmentation_node.SetNodeReferenceID(MODEL_OUTPUT_REFERENCE, original.GetID())
    for node in (segmentation_node, original):
        if model:
            node.SetAttribute(MODEL_ATTRIBUTE, model)
        if model_sha256:
            node.SetAttribute(MODEL_SHA_ATTRIBUTE, model_sha256)
    return original


def heat_color_table(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorTableNode:
    """A black-red-yellow-white table whose opacity rises with the value, so low
    evidence leaves the radiograph visible under it (created once per scene)."""
    existing = scene.GetFirstNodeByName(HEAT_COLOR_TABLE)
    if existing is not None:
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", HEAT_COLOR_TABLE)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    table.SetHideFromEditors(False)
    for index in range(256):
        t = index / 255.0
        red, green, blue = (float(np.clip(3 * t - k, 0.0, 1.0)) for k in (0, 1, 2))
        table.SetColor(index, f"{t:.3f}", red, green, blue, t)
    return table


def heatmap_to_volume(scene: slicer.vtkMRMLScene, volume_node: slicer.vtkMRMLVolumeNode,
                      finding: Finding) -> slicer.vtkMRMLScalarVolumeNode:
    """A finding's heat map as a volume on the radiograph's grid, coloured 0..1."""
    if finding.heatmap is None:
        raise ValueError(f"finding: {finding.name!r} has no heat map")
    if finding.heatmap.shape != radiograph_shape(volume_node):
        raise ValueError(f"finding: heat map shape {finding.heatmap.shape} differs from the "
                         f"volume's {radiograph_shape(volume_node)}")
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                   f"{volume_node.GetName()} {finding.name} heat map")
    set_volume_pixels(node, np.clip(finding.heatmap, 0.0, 1.0).astype(np.float32))
    node.CopyOrientation(volume_node)
    node.SetAttribute(FINDING_ATTRIBUTE, finding.name)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(heat_color_table(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    return node


def show_in_slice_views(scene: slicer.vtkMRMLScene, background: slicer.vtkMRMLVolumeNode,
                        foreground: slicer.vtkMRMLVolumeNode | None = None,
                        opacity: float = HEAT_OPACITY) -> int:
    """Show ``background`` (and ``foreground`` over it) in every slice view.

    Returns the number of slice views changed (0 outside the application).
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity: {opacity} is not within 0..1")
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for index in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(index)
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground else None)
        composite.SetForegroundOpacity(opacity if foreground else 0.0)
    return composites.GetNumberOfItems()


TABLE_COLUMNS = ("Kind", "Name", "Value", "Unit", "Threshold", "Result", "Derivation")


def results_table(scene: slicer.vtkMRMLScene, analysis: Analysis,
                  name: str) -> slicer.vtkMRMLTableNode:
    """Findings, measurements (mask agreement included), quality flags and the model
    versions that made them, one row each."""
    rows = [("finding", f.name, f.probability, "probability", f"{f.threshold:g}",
             "positive" if f.positive else "negative",
             f"{f.code.meaning} ({f.code.scheme_designator} {f.code.value})")
            for f in analysis.findings]
    rows += [("measurement", m.name, m.value, m.unit, "", "", m.derivation)
             for m in analysis.measurements]
    rows += [("quality flag", str(flag), float("nan"), "", "", "flagged", "")
             for flag in analysis.quality_flags]
    rows += [("model", model.id, float("nan"), "", "", model.task, f"weights {model.sha256}")
             for model in analysis.models]
    columns: list[vtk.vtkAbstractArray] = []
    for column_name in TABLE_COLUMNS:
        array = vtk.vtkDoubleArray() if column_name == "Value" else vtk.vtkStringArray()
        array.SetName(column_name)
        columns.append(array)
    for row in rows:
        for array, value in zip(columns, row, strict=True):
            array.InsertNextValue(value)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for array in columns:
        table.AddColumn(array)
    return table


def show_analysis(scene: slicer.vtkMRMLScene, volume_node: slicer.vtkMRMLVolumeNode,
                  analysis: Analysis) -> AnalysisNodes:
    """Every node for one analysis: segments, findings table, heat maps over the image."""
    nodes = AnalysisNodes(
        segmentation=analysis_to_segmentation(scene, volume_node, analysis),
        table=results_table(scene, analysis, f"{volume_node.GetName()} findings"))
    for finding in analysis.findings:
        if finding.heatmap is not None:
            nodes.heatmaps[finding.name] = heatmap_to_volume(scene, volume_node, finding)
    # the most probable finding's heat map is the one worth seeing first
    shown = max((f for f in analysis.findings if f.name in nodes.heatmaps),
                key=lambda f: f.probability, default=None)
    show_in_slice_views(scene, volume_node, nodes.heatmaps[shown.name] if shown else None)
    return nodes
