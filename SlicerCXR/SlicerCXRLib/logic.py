"""What the module does, without its GUI: load, analyse, load a SEG, export, retrain.

``SlicerCXR.SlicerCXRLogic`` delegates here; tests drive this class on a plain
``vtkMRMLScene``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import slicer

import cxr_core
from SlicerCXRLib.background import BackgroundProcess, analyze_command
from SlicerCXRLib.devices import CPU, check_device, place_engine
from SlicerCXRLib.dicom_worklist import DatabaseWorklist
from SlicerCXRLib.export import ExportResult, export_segmentation
from SlicerCXRLib.scene_bridge import (
    AnalysisNodes,
    DicomFileLookup,
    load_radiograph_volume,
    show_analysis,
    source_file,
    volume_to_radiograph,
    write_volume_input,
)
from SlicerCXRLib.seg_loading import load_seg
from SlicerCXRLib.worklist import CaseList, OpenedCase, Worklist

RETRAIN_DEFAULTS = {"epochs": 60, "patience": 30, "learning_rate": 2e-3, "max_minutes": 15.0}
"""Fine-tuning on 10-40 corrections, as the adaptation simulation measured it
(docs/adaptation.md): 5e-4 for 25 epochs left the model where it was, 2e-3 for 60 epochs
learnt a structure the base had never seen (heart Dice 0.22 -> ~0.9 with 20-40 images).
The promotion guard rail refuses a fine-tune that scores worse than its parent."""


class CXRLogic:
    """The module's logic on one scene.

    Parameters
    ----------
    scene:
        ``slicer.mrmlScene`` in Slicer.
    models_dir:
        Folder of model folders (default: the engine's).
    device:
        ``cpu`` or ``cuda`` for every network the engine runs.
    dicom_file_for_uid:
        ``slicer.dicomDatabase.fileForInstance`` in Slicer, so volumes loaded from the
        DICOM database bring their header along.
    engine:
        An already loaded engine to use (``models_dir`` is then ignored).
    pins:
        Model versions to run instead of the active ones (``{"lung_seg": "1.0.0"}``);
        every result names the versions that made it.
    """

    def __init__(self, scene: slicer.vtkMRMLScene, *, models_dir: Path | None = None,
                 device: str = CPU, dicom_file_for_uid: DicomFileLookup | None = None,
                 engine: cxr_core.Engine | None = None,
                 pins: dict[str, str] | None = None) -> None:
        if scene is None:
            raise ValueError("scene: a vtkMRMLScene is required")
        self.scene = scene
        self.models_dir = models_dir
        self.device = device
        self.dicom_file_for_uid = dicom_file_for_uid
        self._engine = engine
        self.pins = dict(pins or {})
        if engine is not None:
            place_engine(engine, device)
        self.analyses: dict[str, cxr_core.Analysis] = {}
        """The latest analysis per volume node ID."""

    @property
    def engine(self) -> cxr_core.Engine:
        """Loaded on first use (reading the weights takes a moment), straight onto the
        chosen device."""
        if self._engine is None:
            self._engine = cxr_core.Engine(models_dir=self.models_dir, pins=self.pins,
                                           device=check_device(self.device))
        return self._engine

    def set_device(self, device: str) -> None:
        """Switch CPU/GPU (applied now if the models are loaded, else when they load)."""
        if self._engine is not None:
            place_engine(self._engine, device)
        self.device = device

    def set_pins(self, pins: dict[str, str]) -> None:
        """Run these model versions from now on (the engine reloads on next use)."""
        if pins != self.pins:
            self.pins = dict(pins)
            self._engine = None

    def load_radiograph(self, path: Path | str) -> slicer.vtkMRMLScalarVolumeNode:
        """Read a DICOM or image file into a volume, header and spacing kept."""
        return load_radiograph_volume(self.scene, path)

    def analyze(self, volume_node: slicer.vtkMRMLScalarVolumeNode) -> AnalysisNodes:
        """Run the engine on a volume and add its segments, table and heat maps."""
        radiograph = volume_to_radiograph(volume_node, dicom_file_for_uid=self.dicom_file_for_uid)
        analysis = self.engine.analyze(radiograph)
        self.analyses[volume_node.GetID()] = analysis
        return show_analysis(self.scene, volume_node, analysis)

    def analyze_in_background(self, inputs: list[Path | str], out_dir: Path | str, *,
                              python: str | None = None, env: dict[str, str] | None = None,
                              pixel_spacing: str | None = None) -> BackgroundProcess:
        """Start ``cxr analyze`` on files or folders into ``out_dir`` in its own process
        (with this logic's models folder); poll it, cancel it, then :meth:`open_worklist`.

        Raises
        ------
        ValueError
            When ``inputs`` hold no radiograph file.
        """
        files = cxr_core.expand_inputs([Path(p) for p in inputs])
        if not files:
            raise ValueError("inputs: no radiograph files found")
        command = analyze_command([str(p) for p in inputs], out_dir, python=python,
                                  models_dir=self.models_dir, pins=self.pins,
                                  pixel_spacing=pixel_spacing)
        return BackgroundProcess(command, total=len(files), env=env).start()

    def analyze_volume_in_background(self, volume_node: slicer.vtkMRMLScalarVolumeNode,
                                     out_dir: Path | str, *, python: str | None = None,
                                     env: dict[str, str] | None = None) -> BackgroundProcess:
        """Start ``cxr analyze`` on ``volume_node``; when it has ended,
        :meth:`show_background_result` puts the results on that volume.

        The file the volume was read from is analysed when it has one the engine can
        read (so a DICOM header comes along); a volume without one (drawn, computed, its
        file gone) is first written into ``out_dir`` with the pixels and spacing an
        in-process analysis would take (:func:`write_volume_input`).
        """
        path = source_file(volume_node, dicom_file_for_uid=self.dicom_file_for_uid)
        spacing = None
        if path is None:
            path, spacing = write_volume_input(volume_node, Path(out_dir))
        return self.analyze_in_background([path], out_dir, python=python, env=env,
                                          pixel_spacing=spacing)

    def show_background_result(self, volume_node: slicer.vtkMRMLScalarVolumeNode,
                               out_dir: Path | str) -> OpenedCase:
        """The finished background analysis of ``volume_node`` shown on it.

        Raises
        ------
        cxr_core.RefusedInput
            When the engine refused the image (with its reason).
        """
        row = cxr_core.read_review(Path(out_dir))[0]
        if row.status != "analyzed":
            raise cxr_core.RefusedInput(row.note or row.status)
        return Worklist(out_dir).open(self.scene, row, volume=volume_node)

    def open_worklist(self, run_dir: Path | str) -> Worklist:
        """The cases of a finished ``cxr analyze`` run, least trusted masks first."""
        return Worklist(run_dir)

    def open_database_worklist(self, database: Path | str) -> CaseList:
        """The radiographs of Slicer's DICOM database (its folder or ``ctkDICOM.sql``)
        that have our SR, least trusted masks first."""
        return DatabaseWorklist(database)

    def next_case(self, worklist: CaseList) -> OpenedCase | None:
        """Open the worklist's next case in the scene (None when none is left)."""
        row = worklist.next_case()
        return worklist.open(self.scene, row) if row is not None else None

    def load_seg(self, path: Path | str, volume_node: slicer.vtkMRMLScalarVolumeNode | None = None
                 ) -> slicer.vtkMRMLSegmentationNode:
        """Load a SlicerCXR DICOM-SEG onto its source radiograph."""
        return load_seg(self.scene, path, volume_node)

    def export(self, segmentation_node: slicer.vtkMRMLSegmentationNode,
               volume_node: slicer.vtkMRMLScalarVolumeNode, store_root: Path | str, *,
               user: str | None = None, split: str = "train") -> ExportResult:
        """Write the reviewed segmentation to the label store (and a corrected SEG)."""
        return export_segmentation(segmentation_node, volume_node, store_root, user=user,
                                   split=split, dicom_file_for_uid=self.dicom_file_for_uid)


def retrain_command(store_root: Path | str, out_dir: Path | str, *,
                    init_from: str | Path = "lung_seg", python: str | None = None,
                    epochs: int = RETRAIN_DEFAULTS["epochs"], datalist_only: bool = True,
                    extra: tuple[str, ...] = ()) -> list[str]:
    """The ``cxr train lung`` command that fine-tunes ``init_from`` on a label store.

    Parameters
    ----------
    store_root:
        The label store (its ``datalist.json`` must exist: export something first).
    out_dir:
        Where the new model and its card go (a new folder; the shipped model stays).
    init_from:
        Model name or folder to start from.
    python:
        The interpreter (``PythonSlicer`` in Slicer; default: this one).
    epochs:
        Training epochs.
    datalist_only:
        Train on the corrections only (the shared data's val split still picks the
        checkpoint); ``False`` adds them to the shared training split.
    extra:
        More ``cxr train lung`` arguments.
    """
    datalist = Path(store_root) / "datalist.json"
    if not datalist.is_file():
        raise ValueError(f"store_root: no datalist.json in {store_root} (export first)")
    if epochs < 1:
        raise ValueError(f"epochs: {epochs} is not a positive number of epochs")
    command = [python or sys.executable, "-m", "cxr_core.cli", "train", "lung",
               "--datalist", str(datalist), "--init-from", str(init_from), "--out", str(out_dir),
               "--epochs", str(epochs), "--patience", str(RETRAIN_DEFAULTS["patience"]),
               "--learning-rate", str(RETRAIN_DEFAULTS["learning_rate"]),
               "--max-minutes", str(RETRAIN_DEFAULTS["max_minutes"])]
    return command + (["--datalist-only"] if datalist_only else []) + list(extra)
