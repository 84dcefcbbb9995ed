"""SlicerCXR's logic without Qt: scene bridge, SEG loading, label export, dependencies.

Importable wherever MRML is (Slicer, or the ``slicer-core`` wheel in tests); never
imports ``qt`` or ``ctk``.
"""
