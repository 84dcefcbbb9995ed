"""The seams between the engine and its faces, checked on the source itself.

The faces (``dicom_node``, ``SlicerCXR``) use ``cxr_core`` only through its public
surface; inside the engine, the analysis path never imports training, writers never
import the engine, and nothing imports a face. These tests fail when a change reaches
past those lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cxr_core

REPO = Path(__file__).resolve().parents[1]
FACES = ("dicom_node", "SlicerCXR")
MAX_LINES = 600


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[str, list[str]]]:
    """``(module, names)`` for every import in a file, at any depth (function bodies too)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names]


def _attributes_of_cxr_core(path: Path) -> set[str]:
    """Names used as ``cxr_core.<name>`` in a file."""
    return {node.attr for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "cxr_core"}


def _engine_modules_imported_by(folders: tuple[str, ...]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in _python_files(*folders):
        for module, _ in _imports(path):
            if module == "cxr_core" or module.startswith("cxr_core."):
                found.setdefault(module, set()).add(str(path.relative_to(REPO)))
    return found


def test_faces_import_only_the_public_surface() -> None:
    modules = _engine_modules_imported_by(FACES)
    assert set(modules) == {"cxr_core"}, {m: sorted(f) for m, f in modules.items()
                                           if m != "cxr_core"}


def test_faces_use_only_exported_names() -> None:
    used: dict[str, str] = {}
    for path in _python_files(*FACES):
        for module, names in _imports(path):
            if module == "cxr_core":
                used |= {name: path.name for name in names}
        used |= {name: path.name for name in _attributes_of_cxr_core(path)}
    unexported = {name: where for name, where in used.items() if name not in cxr_core.__all__}
    assert not unexported


def test_every_exported_name_resolves() -> None:
    for name in cxr_core.__all__:
        assert getattr(cxr_core, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'pipeline_engine'"):
        _ = cxr_core.pipeline_engine  # type: ignore[attr-defined]


def test_importing_the_surface_loads_no_torch() -> None:
    """``import cxr_core`` (and reading a radiograph) stays cheap: torch comes in with
    the engine, not with the vocabulary."""
    code = ("import sys, cxr_core; cxr_core.read_radiograph; cxr_core.SEGMENT_TYPES; "
            "cxr_core.safe_folder_name; "
            "print(sorted(m for m in ('torch', 'cxr_core.training') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=REPO)
    assert result.stdout.strip() == "[]"


def _imports_under(folder: str, *, skip: tuple[str, ...] = ()) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in _python_files(folder):
        relative = str(path.relative_to(REPO))
        if any(relative.startswith(s) for s in skip):
            continue
        for module, _ in _imports(path):
            found.setdefault(relative, set()).add(module)
    return found


def test_analysis_path_never_imports_training() -> None:
    # the surface (__init__) names the training entry points, loaded only when asked for
    # (test_importing_the_surface_loads_no_torch); the CLI's train/evaluate run them
    offenders = {path: sorted(m for m in modules if m.startswith("cxr_core.training"))
                 for path, modules in _imports_under("cxr_core", skip=(
                     "cxr_core/training", "cxr_core/cli", "cxr_core/__init__.py")).items()}
    assert not {p: m for p, m in offenders.items() if m}


def test_writers_never_import_the_engine() -> None:
    offenders = {path: sorted(m for m in modules
                              if m.startswith(("cxr_core.engine", "cxr_core.stages")))
                 for path, modules in _imports_under("cxr_core/writers").items()}
    assert not {p: m for p, m in offenders.items() if m}


def test_engine_never_imports_a_face() -> None:
    offenders = {path: sorted(m for m in modules if m.split(".")[0] in FACES + ("SlicerCXRLib",))
                 for path, modules in _imports_under("cxr_core").items()}
    assert not {p: m for p, m in offenders.items() if m}


def test_no_file_over_the_size_limit() -> None:
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines())
             for p in _python_files("cxr_core", "dicom_node", "SlicerCXR")}
    assert not {path: lines for path, lines in sizes.items() if lines > MAX_LINES}


@pytest.mark.parametrize("package", ["cxr_core", "dicom_node", "SlicerCXR/SlicerCXRLib"])
def test_each_package_says_what_lives_there_and_who_imports_it(package: str) -> None:
    docstring = ast.get_docstring(ast.parse((REPO / package / "__init__.py").read_text()))
    assert docstring and "import" in docstring.lower() and len(docstring.splitlines()) > 3
