"""Checks that need the full Slicer application (run by ctest through
``slicer_add_python_unittest``): the terminology entries SlicerCXR writes resolve in the
terminology tables Slicer loads, and the module's self-test passes.

The Qt-free logic itself is tested with pytest on real MRML (``tests/slicer``).
"""

import unittest

import slicer


class SlicerCXRLibTest(unittest.TestCase):
    def test_terminology_entries_resolve_in_slicer(self):
        from SlicerCXRLib.scene_bridge import terminology_entry

        from cxr_core import SEGMENT_TYPES

        logic = slicer.modules.terminologies.logic()
        for segment_type in SEGMENT_TYPES.values():
            entry = slicer.vtkSlicerTerminologyEntry()
            self.assertTrue(logic.DeserializeTerminologyEntry(terminology_entry(segment_type),
                                                              entry), segment_type.name)
            self.assertEqual(entry.GetTypeObject().GetCodeValue(),
                             segment_type.property_type.value)
            if segment_type.modifier is not None:
                self.assertEqual(entry.GetTypeModifierObject().GetCodeValue(),
                                 segment_type.modifier.value)

    def test_module_self_test(self):
        from SlicerCXR import SlicerCXRTest

        test = SlicerCXRTest()
        test.runTest()
