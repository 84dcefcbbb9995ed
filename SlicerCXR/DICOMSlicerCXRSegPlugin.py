"""A DICOM browser plugin for SEGs of chest radiographs (CR/DX/SC, no Frame of Reference),
which Slicer's DICOM-SEG plugin (dcmqi) cannot load. The logic is in
``SlicerCXRLib.dicom_seg`` (tested without Qt); this file only adapts it to DICOMLib."""

from __future__ import annotations

import logging

import slicer
from DICOMLib import DICOMLoadable, DICOMPlugin
from slicer.ScriptedLoadableModule import ScriptedLoadableModule
from SlicerCXRLib.dicom_seg import examine_files, load_candidate

PLUGIN_NAME = "DICOMSlicerCXRSegPlugin"


class DICOMSlicerCXRSegPluginClass(DICOMPlugin):
    """Offers our SEGs with a confidence above dcmqi's plugin and loads them with
    ``cxr_core``'s reader, aligned with their radiograph."""

    def __init__(self) -> None:
        super().__init__()
        self.loadType = "SlicerCXR radiograph SEG"

    def examineFiles(self, files):  # noqa: N802, ANN001, ANN201 (DICOMPlugin's API)
        loadables = []
        for candidate in examine_files(files):
            loadable = DICOMLoadable()
            loadable.files = candidate.files
            loadable.name = candidate.name
            loadable.tooltip = candidate.tooltip
            loadable.confidence = candidate.confidence
            loadable.selected = True
            loadable.referencedInstanceUIDs = [candidate.source_uid]
            loadable.candidate = candidate
            loadables.append(loadable)
        return loadables

    def load(self, loadable) -> bool:  # noqa: ANN001 (DICOMPlugin's API)
        try:
            load_candidate(slicer.mrmlScene, loadable.candidate,
                           slicer.dicomDatabase.fileForInstance)
        except (ValueError, OSError) as error:
            logging.error("SlicerCXR could not load the SEG: %s", error)
            return False
        return True


class DICOMSlicerCXRSegPlugin(ScriptedLoadableModule):
    """Registers the plugin with the DICOM module (a hidden module)."""

    def __init__(self, parent) -> None:  # noqa: ANN001
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SlicerCXR DICOM-SEG plugin"
        self.parent.categories = ["Developer Tools.DICOM Plugins"]
        self.parent.contributors = ["SlicerCXR developers"]
        self.parent.helpText = "Loads SEGs of chest radiographs from the DICOM browser."
        self.parent.hidden = True
        try:
            plugins = slicer.modules.dicomPlugins
        except AttributeError:
            plugins = slicer.modules.dicomPlugins = {}
        plugins[PLUGIN_NAME] = DICOMSlicerCXRSegPluginClass
