"""The extension's files fit together: what the widget uses, the .ui defines; CMake
lists every library file; SlicerCXRLib never imports Qt."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree

from tests.slicer.conftest import MODULE_DIR

LIB_DIR = MODULE_DIR / "SlicerCXRLib"


def _imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_lib_has_no_qt_imports():
    for path in LIB_DIR.glob("*.py"):
        assert not _imported_modules(path) & {"qt", "ctk", "PythonQt", "slicer.qt"}, path.name


def test_widget_uses_only_widgets_the_ui_defines():
    ui = ElementTree.parse(MODULE_DIR / "Resources" / "UI" / "SlicerCXR.ui")
    defined = {w.get("name") for w in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE_DIR / "SlicerCXR.py").read_text()))
    assert used, "the widget uses no .ui widgets?"
    assert used <= defined, f"missing in SlicerCXR.ui: {sorted(used - defined)}"


def test_module_defines_module_widget_logic_and_test():
    tree = ast.parse((MODULE_DIR / "SlicerCXR.py").read_text())
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"SlicerCXR", "SlicerCXRWidget", "SlicerCXRLogic", "SlicerCXRTest"} <= classes


def test_cmake_lists_every_lib_file_and_resources():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    for path in LIB_DIR.glob("*.py"):
        assert f"${{MODULE_NAME}}Lib/{path.name}" in cmake, path.name
    assert "WITH_GENERIC_TESTS" in cmake and "cxr_core/*.py" in cmake
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert resource in cmake
        assert (MODULE_DIR / resource.replace("${MODULE_NAME}", "SlicerCXR")).is_file()
    top = (MODULE_DIR.parent / "CMakeLists.txt").read_text()
    assert 'EXTENSION_DEPENDS "PyTorch"' in top and "add_subdirectory(SlicerCXR)" in top
