"""SlicerCXR's logic without Qt: the module's work, testable on real MRML.

``logic`` (what the module does: load, analyse, load a SEG, export, retrain command),
``scene_bridge`` (volumes <-> Radiograph, Analysis -> segmentation, table, heat maps),
``seg_loading`` (our SEG onto its radiograph), ``export`` (label store + corrected SEG),
``mrml`` (geometry and pixel helpers), ``devices`` (CPU/GPU) and ``dependencies`` (which
packages to install, derived from ``pyproject.toml``).

Importable wherever MRML is (Slicer, or the ``slicer-core`` wheel in tests): it may import
``slicer`` and ``vtk``, never ``qt`` or ``ctk``; it uses the engine only through
``import cxr_core`` (its public surface). Only ``SlicerCXR.py`` and the tests import it.
"""
