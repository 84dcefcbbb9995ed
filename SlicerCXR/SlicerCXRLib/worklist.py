"""The review worklist: analysed radiographs, the least trusted masks first, "next case".

Its source is a results folder (here) or Slicer's DICOM database
(:mod:`SlicerCXRLib.dicom_worklist`). A folder is analysed in the background (``cxr
analyze --out RUN``, see :mod:`SlicerCXRLib.background`), which writes
``RUN/review.csv`` worst-first; the worklist reads it and opens one case at a time: the
radiograph, its masks as an editable segmentation (the model's output kept aside for
the label store, with the model versions that drew them) and a table of its
measurements, mask agreement included. Nothing is re-analysed on the GUI thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk
from PIL import Image

import cxr_core
from SlicerCXRLib.scene_bridge import (
    heatmap_to_volume,
    load_radiograph_volume,
    masks_to_segmentation,
    record_model_output,
    show_in_slice_views,
)

ANALYZED = "analyzed"
TABLE_COLUMNS = ("Kind", "Name", "Value", "Unit", "Derivation")


@dataclass
class OpenedCase:
    """The nodes of one opened worklist case."""

    row: cxr_core.ReviewRow
    volume: slicer.vtkMRMLScalarVolumeNode
    segmentation: slicer.vtkMRMLSegmentationNode
    table: slicer.vtkMRMLTableNode
    models: list[str] = field(default_factory=list)
    """``name@version`` of every model that made this result."""
    heatmaps: dict[str, slicer.vtkMRMLScalarVolumeNode] = field(default_factory=dict)
    """The positive findings' heat maps, by finding name."""


class CaseList:
    """Cases worst first (lowest review score) and a cursor: what every worklist source
    (a results folder, a DICOM database) shares; :meth:`open` is the source's own."""

    def __init__(self, cases: list[cxr_core.ReviewRow],
                 not_analyzed: list[cxr_core.ReviewRow]) -> None:
        self.cases = cases
        self.not_analyzed = not_analyzed
        self.position = -1
        """Index of the current case in :attr:`cases` (-1 before the first)."""

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def current(self) -> cxr_core.ReviewRow | None:
        return self.cases[self.position] if 0 <= self.position < len(self.cases) else None

    def next_case(self) -> cxr_core.ReviewRow | None:
        """Move to the next case (the next-least trusted); None past the last."""
        if self.position < len(self.cases):
            self.position += 1
        return self.current

    def describe(self, row: cxr_core.ReviewRow) -> str:
        """A one-line summary for the log: rank, file name, scores."""
        rank = self.cases.index(row) + 1
        scores = ", ".join(f"{name} {value:.3f}" for name, value in
                           (("right lung", row.right_lung), ("left lung", row.left_lung),
                            ("heart", row.heart)) if value is not None)
        return f"case {rank}/{len(self.cases)}: {Path(row.input).name} ({scores})"

    def open(self, scene: slicer.vtkMRMLScene, row: cxr_core.ReviewRow,
             volume: slicer.vtkMRMLScalarVolumeNode | None = None) -> OpenedCase:
        """Load ``row``'s radiograph (unless ``volume`` is it) and its results."""
        raise NotImplementedError


class Worklist(CaseList):
    """The analysed cases of a run, in ``review.csv`` order (worst first).

    Parameters
    ----------
    run_dir:
        A ``cxr analyze --out`` folder holding ``review.csv``.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        if not (self.run_dir / cxr_core.REVIEW_CSV).is_file():
            raise ValueError(f"run_dir: no {cxr_core.REVIEW_CSV} in {run_dir} "
                             "(analyse a folder first)")
        rows = cxr_core.read_review(self.run_dir)
        super().__init__([row for row in rows if row.status == ANALYZED],
                         [row for row in rows if row.status != ANALYZED])

    def open(self, scene: slicer.vtkMRMLScene, row: cxr_core.ReviewRow,
             volume: slicer.vtkMRMLScalarVolumeNode | None = None) -> OpenedCase:
        """Load ``row``'s radiograph (unless its ``volume`` is already in the scene) and
        its results from the run folder into ``scene``."""
        folder = self.run_dir / row.folder
        summary: dict[str, Any] = json.loads((folder / "analysis.json").read_text())
        volume = volume or load_radiograph_volume(scene, row.input)
        masks = {path.stem: np.asarray(Image.open(path)) > 127
                 for path in sorted((folder / "masks").glob("*.png"))
                 if path.stem in cxr_core.SEGMENT_TYPES}
        segmentation = masks_to_segmentation(scene, volume, masks,
                                             name=f"{volume.GetName()} segments")
        models = [model["id"] for model in summary.get("models", [])]
        record_model_output(scene, segmentation, volume, masks, model=", ".join(models) or None,
                            model_sha256=", ".join(m["sha256"] for m in summary.get("models", []))
                            or None)
        table = summary_table(scene, summary, f"{volume.GetName()} results")
        heatmaps = _heatmaps(scene, volume, folder, summary)
        # the most probable finding's heat map is the one worth seeing first, as in-process
        shown = max((f for f in summary.get("findings", []) if f["name"] in heatmaps),
                    key=lambda f: f["probability"], default=None)
        show_in_slice_views(scene, volume, heatmaps[shown["name"]] if shown else None)
        return OpenedCase(row, volume, segmentation, table, models, heatmaps)


def _heatmaps(scene: slicer.vtkMRMLScene, volume: slicer.vtkMRMLScalarVolumeNode, folder: Path,
              summary: dict[str, Any]) -> dict[str, slicer.vtkMRMLScalarVolumeNode]:
    """The run's heat map PNGs (255 = hottest) as volumes over the radiograph."""
    nodes = {}
    for entry in summary.get("findings", []):
        path = folder / "heatmaps" / f"{cxr_core.safe_folder_name(entry['name'])}.png"
        if not path.is_file() or entry["name"] not in cxr_core.FINDING_CODES:
            continue
        finding = cxr_core.Finding(
            entry["name"], cxr_core.FINDING_CODES[entry["name"]], float(entry["probability"]),
            float(entry["threshold"]), bool(entry["positive"]),
            heatmap=np.asarray(Image.open(path), dtype=np.float32) / 255.0)
        nodes[entry["name"]] = heatmap_to_volume(scene, volume, finding)
    return nodes


def summary_table(scene: slicer.vtkMRMLScene, summary: dict[str, Any],
                  name: str) -> slicer.vtkMRMLTableNode:
    """An ``analysis.json``'s measurements, findings and models, one row each."""
    rows: list[tuple[str, str, float, str, str]] = [
        ("measurement", m["name"], float(m["value"]), m["unit"], m["derivation"])
        for m in summary.get("measurements", [])]
    rows += [("finding", f["name"], float(f["probability"]), "probability",
              "positive" if f["positive"] else "negative") for f in summary.get("findings", [])]
    rows += [("model", m["id"], float("nan"), "", f"{m['task']}; weights {m['sha256']}")
             for m in summary.get("models", [])]
    return rows_table(scene, rows, name)


def rows_table(scene: slicer.vtkMRMLScene, rows: list[tuple[str, str, float, str, str]],
               name: str) -> slicer.vtkMRMLTableNode:
    """A table node of (kind, name, value, unit, derivation) rows."""
    arrays: list[vtk.vtkAbstractArray] = []
    for column in TABLE_COLUMNS:
        array = vtk.vtkDoubleArray() if column == "Value" else vtk.vtkStringArray()
        array.SetName(column)
        arrays.append(array)
    for row in rows:
        for array, value in zip(arrays, row, strict=True):
            array.InsertNextValue(value)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for array in arrays:
        table.AddColumn(array)
    return table
