"""SlicerCXR: review chest radiograph AI in 3D Slicer, correct it, export labels, retrain.

The GUI lives here; everything it does is in ``SlicerCXRLib`` (no Qt), which the tests
drive on real MRML. ``cxr_core`` (the engine) is imported only after its packages are
installed, so the module loads even in a fresh Slicer.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

MODULE_DIR = Path(__file__).resolve().parent


def _engine_root() -> Path | None:
    """Where ``cxr_core`` lives: beside this file when installed from a build, or in
    the repository root when the module folder is added from a source checkout."""
    for candidate in (MODULE_DIR, MODULE_DIR.parent):
        if (candidate / "cxr_core" / "__init__.py").is_file():
            return candidate
    return None


ENGINE_ROOT = _engine_root()
if ENGINE_ROOT is not None and str(ENGINE_ROOT) not in sys.path:
    sys.path.insert(0, str(ENGINE_ROOT))

from SlicerCXRLib import dependencies  # noqa: E402  (needs no third-party package)


class SlicerCXR(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Chest X-ray AI (SlicerCXR)"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerCXR developers"]
        self.parent.helpText = (
            "Analyse a chest radiograph (lungs, heart, pneumothorax, findings with heat maps, "
            "measurements), correct the masks in Segment Editor, export them as training "
            "labels and a DICOM-SEG, and fine-tune the lung model on them. "
            "See SlicerCXR/README.md.")
        self.parent.acknowledgementText = (
            "Models trained on public chest radiograph datasets; see each model card.")


class SlicerCXRWidget(ScriptedLoadableModuleWidget):
    """The module panel: Setup, Review, Correct and export, Retrain."""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/SlicerCXR.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = SlicerCXRLogic()
        self.logic.log = self.log

        self.ui.installButton.connect("clicked(bool)", self.onInstall)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                             self.updateButtons)
        self.ui.loadFileButton.connect("clicked(bool)", self.onLoadFile)
        self.ui.loadSegButton.connect("clicked(bool)", self.onLoadSeg)
        self.ui.analyzeButton.connect("clicked(bool)", self.onAnalyze)
        self.ui.editButton.connect("clicked(bool)", self.onEdit)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.retrainButton.connect("clicked(bool)", self.onRetrain)
        self.ui.analyzeFolderButton.connect("clicked(bool)", self.onAnalyzeFolder)
        self.ui.openWorklistButton.connect("clicked(bool)", self.onOpenWorklist)
        self.ui.nextCaseButton.connect("clicked(bool)", self.onNextCase)
        self.ui.databaseWorklistButton.connect("clicked(bool)", self.onOpenDatabaseWorklist)
        self.ui.analyzeDatabaseButton.connect("clicked(bool)", self.onAnalyzeDatabase)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.pinsLineEdit.connect("editingFinished()", self.onPinsChanged)
        self.job = None  # the running background process, if any
        self.onJobDone = None
        self.worklist = None
        self.jobTimer = qt.QTimer()
        self.jobTimer.setInterval(300)
        self.jobTimer.connect("timeout()", self.pollJob)
        self.ui.reviewerLineEdit.text = qt.QSettings().value("SlicerCXR/Reviewer", "")
        self.updateDependencyStatus()
        self.updateButtons()

    def log(self, text: str) -> None:
        self.ui.statusLog.appendPlainText(text)
        slicer.app.processEvents()

    def updateButtons(self, *_unused) -> None:
        volume = self.ui.inputVolumeSelector.currentNode()
        segmentation = self.ui.segmentationSelector.currentNode()
        self.ui.analyzeButton.enabled = volume is not None
        self.ui.exportButton.enabled = volume is not None and segmentation is not None
        self.ui.editButton.enabled = segmentation is not None

    def updateDependencyStatus(self) -> None:
        missing = self.logic.missingPackages()
        self.ui.dependenciesStatusLabel.text = (
            "all installed" if not missing else "missing: " + ", ".join(missing))
        self.ui.installButton.enabled = bool(missing)

    def onInstall(self) -> None:
        with slicer.util.tryWithErrorDisplay("Installing Python packages failed.",
                                             waitCursor=True):
            self.logic.installPackages(useGpu=self.ui.deviceComboBox.currentIndex == 1)
        self.updateDependencyStatus()

    def onDeviceChanged(self, index: int) -> None:
        with slicer.util.tryWithErrorDisplay("That device cannot be used."):
            self.logic.setDevice("cuda" if index == 1 else "cpu")

    def onLoadFile(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Load chest radiograph", "",
            "Radiographs (*.dcm *.dicom *.png *.jpg *.jpeg *.tif *.tiff);;All files (*)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Could not read the radiograph.", waitCursor=True):
            volume = self.logic.loadRadiograph(path)
            self.ui.inputVolumeSelector.setCurrentNode(volume)
            slicer.util.setSliceViewerLayers(background=volume, fit=True)

    def onLoadSeg(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Load DICOM-SEG", "",
                                              "DICOM (*.dcm);;All files (*)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Could not load the DICOM-SEG.", waitCursor=True):
            segmentation = self.logic.loadSeg(path, self.ui.inputVolumeSelector.currentNode())
            self.ui.segmentationSelector.setCurrentNode(segmentation)

    # background jobs -------------------------------------------------------------------
    def startJob(self, job, onDone) -> None:
        """Follow ``job`` from a timer (the GUI stays free); ``onDone(job)`` at its end."""
        self.job, self.onJobDone = job, onDone
        self.ui.jobProgressBar.setValue(0)
        self.ui.cancelButton.enabled = True
        self.jobTimer.start()

    def pollJob(self) -> None:
        job = self.job
        if job is None:
            return
        for line in job.poll():
            self.ui.statusLog.appendPlainText(line)
        fraction = job.progress.fraction
        if fraction is not None:
            self.ui.jobProgressBar.setValue(int(100 * fraction))
        if job.running:
            return
        self.jobTimer.stop()
        job.wait(5)
        self.job = None
        self.ui.cancelButton.enabled = False
        if job.cancelled:
            self.log("Cancelled.")
            return
        with slicer.util.tryWithErrorDisplay("The background job failed."):
            self.onJobDone(job)

    def onCancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def busy(self) -> bool:
        if self.job is not None:
            slicer.util.warningDisplay("Another analysis or retraining is running: wait for "
                                       "it or cancel it.")
            return True
        return False

    def onPinsChanged(self) -> None:
        with slicer.util.tryWithErrorDisplay("Model versions are name@version, comma separated."):
            self.logic.setPins(self.ui.pinsLineEdit.text)

    # worklist ----------------------------------------------------------------------------
    def onAnalyzeFolder(self) -> None:
        folder = self.ui.worklistInputPathLineEdit.currentPath
        out = self.ui.worklistOutputPathLineEdit.currentPath
        if not folder or not out:
            slicer.util.warningDisplay("Choose the radiographs folder and a results folder.")
            return
        if self.busy() or not self.logic.ensurePackages(self.ui.deviceComboBox.currentIndex == 1):
            return
        with slicer.util.tryWithErrorDisplay("Could not start the analysis."):
            self.startJob(self.logic.analyzeFolder(folder, out),
                          lambda job: self.openWorklist(out) if job.returncode in (0, 2)
                          else self.log(f"cxr analyze ended with status {job.returncode}"))

    def onOpenWorklist(self) -> None:
        out = self.ui.worklistOutputPathLineEdit.currentPath
        with slicer.util.tryWithErrorDisplay("Could not open the results folder."):
            self.openWorklist(out)

    def openWorklist(self, out: str) -> None:
        self.showWorklist(self.logic.openWorklist(out), "see review.csv")

    def showWorklist(self, worklist, where: str) -> None:
        self.worklist = worklist
        skipped = len(worklist.not_analyzed)
        self.ui.worklistStatusLabel.text = (
            f"{len(worklist)} cases, least trusted masks first"
            + (f"; {skipped} not analysed ({where})" if skipped else ""))
        self.ui.nextCaseButton.enabled = len(worklist) > 0
        self.ui.analyzeDatabaseButton.enabled = bool(getattr(worklist, "unanalysed_files",
                                                             list)())

    def onOpenDatabaseWorklist(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not read the DICOM database."):
            self.openDatabaseWorklist()

    def openDatabaseWorklist(self) -> None:
        worklist = self.logic.openDatabaseWorklist(slicer.dicomDatabase.databaseFilename)
        self.showWorklist(worklist, "Analyse the rest runs them")
        for row in worklist.not_analyzed:
            if row.status != "not analyzed":
                self.log(f"{Path(row.input).name}: {row.note}")

    def onAnalyzeDatabase(self) -> None:
        """Analyse the database's radiographs that have no results, in the background,
        then import the SEGs and SRs into the database and reopen its worklist."""
        out = self.ui.worklistOutputPathLineEdit.currentPath
        if not out:
            slicer.util.warningDisplay("Choose a results folder.")
            return
        if self.busy() or not self.logic.ensurePackages(self.ui.deviceComboBox.currentIndex == 1):
            return
        from DICOMLib import DICOMUtils

        def done(job) -> None:
            if job.returncode not in (0, 2):
                raise RuntimeError(f"cxr analyze ended with status {job.returncode}")
            DICOMUtils.importDicom(out)  # our SEGs and SRs: the worklist finds them there
            self.openDatabaseWorklist()

        with slicer.util.tryWithErrorDisplay("Could not start the analysis."):
            self.startJob(self.logic.analyzeFiles(self.worklist.unanalysed_files(), out), done)

    def onNextCase(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not open the case.", waitCursor=True):
            case = self.logic.nextCase(self.worklist)
            if case is None:
                self.ui.worklistStatusLabel.text = "End of the worklist."
                self.ui.nextCaseButton.enabled = False
                return
            self.showCase(case)
            self.ui.worklistStatusLabel.text = self.worklist.describe(case.row)

    def showCase(self, case) -> None:
        self.ui.inputVolumeSelector.setCurrentNode(case.volume)
        self.ui.segmentationSelector.setCurrentNode(case.segmentation)
        self.ui.resultsTableView.setMRMLTableNode(case.table)
        slicer.util.setSliceViewerLayers(background=case.volume, fit=True)
        self.log(f"Results made by {', '.join(case.models)}")

    def onAnalyze(self) -> None:
        """Analyse the selected volume in a background process (a volume with no file is
        written to a temporary folder first); the results land on that volume."""
        if self.busy() or not self.logic.ensurePackages(self.ui.deviceComboBox.currentIndex == 1):
            return
        from cxr_core import RefusedInput

        volume = self.ui.inputVolumeSelector.currentNode()
        out = tempfile.mkdtemp(prefix="slicercxr-")

        def done(_job) -> None:
            try:
                self.showCase(self.logic.showBackgroundResult(volume, out))
            except RefusedInput as refusal:  # an answer, not an error: say why, plainly
                self.log(f"Not analysed: {refusal}")
                slicer.util.warningDisplay(f"SlicerCXR does not analyse this image:\n\n"
                                           f"{refusal}", windowTitle="Not analysed")

        with slicer.util.tryWithErrorDisplay("Could not start the analysis."):
            self.startJob(self.logic.analyzeVolumeInBackground(volume, out), done)

    def onEdit(self) -> None:
        segmentation = self.ui.segmentationSelector.currentNode()
        volume = self.ui.inputVolumeSelector.currentNode()
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentation)
        if volume is not None:
            editor.setSourceVolumeNode(volume)

    def onExport(self) -> None:
        store = self.ui.labelStorePathLineEdit.currentPath
        reviewer = self.ui.reviewerLineEdit.text.strip()
        if not store or not reviewer:
            slicer.util.warningDisplay("Choose a label store folder and enter your name.")
            return
        qt.QSettings().setValue("SlicerCXR/Reviewer", reviewer)
        self.ui.labelStorePathLineEdit.addCurrentPathToHistory()
        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            result = self.logic.export(self.ui.segmentationSelector.currentNode(),
                                       self.ui.inputVolumeSelector.currentNode(), store,
                                       user=reviewer, split=self.ui.splitComboBox.currentText)
            edited = ", ".join(result.entry.edited) or "none"
            self.log(f"Exported {result.entry.key} to {store} (edited: {edited})"
                     + (f"; skipped {', '.join(result.skipped_segments)}"
                        if result.skipped_segments else "")
                     + (f"; SEG {result.seg_path.name}" if result.seg_path else ""))

    def onRetrain(self) -> None:
        store = self.ui.labelStorePathLineEdit.currentPath
        out = self.ui.retrainOutputPathLineEdit.currentPath
        if not store or not out:
            slicer.util.warningDisplay("Choose the label store and a folder for the new model.")
            return
        if self.busy():
            return
        from cxr_core import ModelCard

        def done(job) -> None:
            if job.returncode != 0:
                raise RuntimeError(f"cxr train ended with status {job.returncode}")
            self.log(self.logic.describeRetrain(ModelCard.load(Path(out) / "model.json")))

        with slicer.util.tryWithErrorDisplay("Could not start retraining."):
            self.startJob(self.logic.retrain(store, out, epochs=self.ui.epochsSpinBox.value),
                          done)


class SlicerCXRLogic(ScriptedLoadableModuleLogic):
    """Slicer-side logic: dependency installs and process launching; the rest is
    :class:`SlicerCXRLib.logic.CXRLogic`."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.device = "cpu"
        self._core = None
        self.log = logging.info

    # dependencies ---------------------------------------------------------------------
    def missingPackages(self) -> list[str]:
        missing = [m.describe() for m in dependencies.missing_packages()]
        return (["torch (PyTorch extension)"] if dependencies.torch_missing() else []) + missing

    def ensurePackages(self, useGpu: bool) -> bool:
        """Install what is missing after asking; False if the user declined."""
        missing = self.missingPackages()
        if not missing:
            return True
        if not slicer.util.confirmOkCancelDisplay(
                "SlicerCXR needs these Python packages, which will be downloaded and "
                "installed now (this can take several minutes):\n\n" + "\n".join(missing),
                windowTitle="Install SlicerCXR dependencies"):
            return False
        self.installPackages(useGpu)
        return True

    def installPackages(self, useGpu: bool) -> None:
        """torch through the PyTorch extension (CPU or CUDA build), the rest with pip."""
        if dependencies.torch_missing():
            try:
                import PyTorchUtils
            except ImportError as error:
                raise RuntimeError("The PyTorch extension is not installed: install it from "
                                   "the Extensions Manager and restart Slicer.") from error
            self.log("Installing torch through the PyTorch extension...")
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False,
                forceComputationBackend=dependencies.torch_backend(useGpu),
                torchVersionRequirement=dependencies.TORCH_REQUIREMENT)
            if torch is None:
                raise RuntimeError("torch was not installed")
        missing = dependencies.missing_packages()
        progress = slicer.util.createProgressDialog(
            labelText="Installing Python packages...", maximum=max(1, len(missing)))
        try:
            def report(done: int, total: int, requirement: str) -> None:
                progress.value = done
                progress.labelText = f"Installing {requirement} ({done + 1}/{total})"
                self.log(progress.labelText if requirement else "Packages installed.")
                slicer.app.processEvents()

            dependencies.install_packages(missing, slicer.util.pip_install, report)
        finally:
            progress.close()

    # engine ---------------------------------------------------------------------------
    @property
    def core(self):
        """The Qt-free logic on ``slicer.mrmlScene`` (imports the engine on first use)."""
        if self._core is None:
            from SlicerCXRLib.logic import CXRLogic

            database = getattr(slicer, "dicomDatabase", None)
            self._core = CXRLogic(
                slicer.mrmlScene, device=self.device,
                dicom_file_for_uid=database.fileForInstance if database else None)
        return self._core

    def setDevice(self, device: str) -> None:
        if self._core is not None:
            self._core.set_device(device)
        self.device = device

    def loadRadiograph(self, path: str):
        return self.core.load_radiograph(path)

    def loadSeg(self, path: str, volumeNode=None):
        return self.core.load_seg(path, volumeNode)

    def analyze(self, volumeNode):
        if volumeNode is None:
            raise ValueError("volumeNode: select a radiograph first")
        return self.core.analyze(volumeNode)

    def export(self, segmentationNode, volumeNode, store: str, *, user: str, split: str):
        return self.core.export(segmentationNode, volumeNode, store, user=user, split=split)

    # background processes (PythonSlicer running cxr_core) -------------------------------
    @staticmethod
    def processSettings() -> tuple[str, dict[str, str]]:
        python = shutil.which("PythonSlicer") or sys.executable
        environment = {"PYTHONPATH": os.pathsep.join(
            p for p in (str(ENGINE_ROOT or ""), os.environ.get("PYTHONPATH", "")) if p)}
        return python, environment

    def setPins(self, text: str) -> None:
        """``name@version`` pins, comma separated ('' = the active versions)."""
        pins = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, version = item.partition("@")
            if not name or not version:
                raise ValueError(f"{item!r} is not name@version")
            pins[name] = version
        self.core.set_pins(pins)

    def analyzeFolder(self, folder: str, out: str):
        return self.analyzeFiles([folder], out)

    def analyzeFiles(self, paths, out: str):
        python, environment = self.processSettings()
        return self.core.analyze_in_background(list(paths), out, python=python,
                                               env=environment)

    def analyzeVolumeInBackground(self, volumeNode, out: str):
        if volumeNode is None:
            raise ValueError("volumeNode: select a radiograph first")
        python, environment = self.processSettings()
        return self.core.analyze_volume_in_background(volumeNode, out, python=python,
                                                      env=environment)

    def showBackgroundResult(self, volumeNode, out: str):
        return self.core.show_background_result(volumeNode, out)

    def openWorklist(self, out: str):
        return self.core.open_worklist(out)

    def openDatabaseWorklist(self, database: str):
        return self.core.open_database_worklist(database)

    def nextCase(self, worklist):
        return self.core.next_case(worklist)

    # retraining -----------------------------------------------------------------------
    def retrain(self, store: str, out: str, *, epochs: int):
        """Start fine-tuning the lung model on the label store in a background process
        (Slicer stays responsive; a crash cannot take the scene down); the new card is
        ``out/model.json`` once it has ended."""
        from SlicerCXRLib.background import BackgroundProcess
        from SlicerCXRLib.logic import retrain_command

        python, environment = self.processSettings()
        command = retrain_command(store, out, python=python, epochs=epochs)
        self.log("Running: " + " ".join(command))
        return BackgroundProcess(command, env=environment).start()

    @staticmethod
    def describeRetrain(card) -> str:
        figures = card.evaluation.get("datalist_train", {})
        before = figures.get("before", {}).get("both_lungs", {}).get("dice_mean")
        after = figures.get("after", {}).get("both_lungs", {}).get("dice_mean")
        held = card.evaluation.get("held_out_vs_parent", {})
        held_before = held.get("before", {}).get("both_lungs", {}).get("dice_mean")
        held_after = held.get("after", {}).get("both_lungs", {}).get("dice_mean")
        return (f"New model {card.identifier} (parent {card.provenance.parent_model}): Dice "
                f"on the corrected images {before} -> {after}; on {held.get('n_images')} "
                f"held-out test images {held_before} -> {held_after}. Promote it with "
                "cxr models promote (refused if held-out Dice fell). Card: model.json in "
                "the output folder.")


class SlicerCXRTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload and Test, or ctest): the logic on the application's
    scene with a synthetic drawing, so it needs no patient data: the engine refuses it
    (not a chest radiograph) and masks drawn on it are exported and re-exported."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear(0)

    def runTest(self) -> None:
        self.setUp()
        self.test_analyze_export_reexport()

    def test_analyze_export_reexport(self) -> None:
        self.delayDisplay("Starting the SlicerCXR test")
        logic = SlicerCXRLogic()
        if logic.missingPackages():
            self.fail("missing Python packages: " + ", ".join(logic.missingPackages()))
        from SlicerCXRLib.mrml import radiograph_shape
        from SlicerCXRLib.scene_bridge import add_segment, masks_to_segmentation

        from cxr_core import RefusedInput

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "phantom.png"
            _write_phantom(path)
            volume = logic.loadRadiograph(str(path))
            # a drawing is not a chest radiograph: the engine must say so, not answer
            with self.assertRaises(RefusedInput):
                logic.analyze(volume)
            rows, columns = radiograph_shape(volume)
            drawn = np.zeros((rows, columns), dtype=bool)
            drawn[rows // 4:3 * rows // 4, columns // 8:columns // 2 - 10] = True
            segmentation = masks_to_segmentation(slicer.mrmlScene, volume,
                                                 {"left_lung": drawn[:, ::-1].copy()},
                                                 name="drawn")
            add_segment(segmentation, "right_lung", drawn, volume)

            store = Path(folder) / "store"
            first = logic.export(segmentation, volume, str(store), user="selftest",
                                 split="train").entry
            self.assertIn("right_lung", first.edited)
            second = logic.export(segmentation, volume, str(store), user="selftest",
                                  split="train").entry
            self.assertEqual(first.key, second.key)
            self.assertEqual(len(list((store / "entries").glob("*.json"))), 1)
            self.assertTrue((store / "datalist.json").is_file())
        self.delayDisplay("SlicerCXR test passed")


def _write_phantom(path: Path) -> None:
    """A chest-like phantom: bright body, two dark lung fields, a bright heart."""
    from PIL import Image

    rows, columns = 512, 480
    yy, xx = np.mgrid[:rows, :columns] / np.array([rows, columns])[:, None, None]

    def ellipse(row: float, column: float, height: float, width: float) -> np.ndarray:
        return ((yy - row) / height) ** 2 + ((xx - column) / width) ** 2 < 1

    image = np.full((rows, columns), 60, dtype=np.uint8)
    image[ellipse(0.5, 0.5, 0.5, 0.45)] = 180
    image[ellipse(0.45, 0.3, 0.3, 0.15) | ellipse(0.45, 0.7, 0.3, 0.15)] = 70
    image[ellipse(0.65, 0.55, 0.12, 0.12)] = 200
    Image.fromarray(image).save(path)
