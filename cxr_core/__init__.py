"""SlicerCXR engine: chest radiograph reading, segmentation, findings and DICOM writers.

The vocabulary every face uses:

* :class:`~cxr_core.radiograph.Radiograph` - what a face hands the engine;
* :class:`~cxr_core.analysis.Analysis` - what the engine returns;
* writers in :mod:`cxr_core.writers` turn an ``Analysis`` into files.
"""

__version__ = "0.1.0"
