"""Which Python packages SlicerCXR needs in Slicer, which are missing, how to install them.

Nothing is installed without the caller asking: the module widget shows the list and
installs only after the user agrees. torch goes through the PyTorch extension
(``PyTorchUtils``), which picks a CUDA or CPU build; the rest through pip, one package at
a time so progress can be reported. The list is derived from the project's
``pyproject.toml``, the one place the requirements are written.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

PROJECT = "slicercxr"
SLICER_PROVIDES = frozenset({"simpleitk"})
"""Bundled with Slicer: installing another build with pip would replace Slicer's own."""
NODE_ONLY = frozenset({"pynetdicom", "prometheus-client"})
"""Needed by the DICOM node, not by the Slicer module."""


HERE = Path(__file__).resolve()


def find_pyproject(start: Path = HERE) -> Path:
    """The project's ``pyproject.toml``: two folders up in a source checkout
    (``SlicerCXR/SlicerCXRLib/``), one up in the extension build, which installs it
    beside ``cxr_core`` (see ``SlicerCXR/CMakeLists.txt``).

    Raises
    ------
    FileNotFoundError
        If neither place has SlicerCXR's ``pyproject.toml``.
    """
    for folder in (start.parents[1], start.parents[2]):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and _project(candidate).get("name") == PROJECT:
            return candidate
    raise FileNotFoundError(f"pyproject.toml of {PROJECT} not found near {start.parent}")


def _project(path: Path) -> dict[str, Any]:
    project = tomllib.loads(path.read_text()).get("project", {})
    return project if isinstance(project, dict) else {}


def requirements_from_pyproject(path: Path | None = None) -> tuple[tuple[str, ...], str]:
    """``(pip requirements, torch requirement)`` derived from ``pyproject.toml``: the
    project's dependencies and its ``train`` extra (Retrain runs training in Slicer's
    Python), without what Slicer bundles or only the node needs. torch goes through the
    PyTorch extension, which picks the CUDA or CPU build: the version the project pins
    becomes its lower bound there."""
    project = _project(path or find_pyproject())
    listed = [*project.get("dependencies", []),
              *project.get("optional-dependencies", {}).get("train", [])]
    requirements, torch = [], ""
    for text in listed:
        requirement = Requirement(text)
        name = requirement.name.lower()
        if name == "torch":
            torch = str(requirement.specifier).replace("==", ">=")
        elif name not in SLICER_PROVIDES | NODE_ONLY:
            requirements.append(text)
    return tuple(requirements), torch


REQUIREMENTS, TORCH_REQUIREMENT = requirements_from_pyproject()
"""What the module needs in Slicer, and the ``torchVersionRequirement`` passed to
``PyTorchUtilsLogic().installTorch``."""


@dataclass(frozen=True)
class MissingPackage:
    requirement: str
    installed_version: str | None
    """``None`` when absent, else the version that does not satisfy the requirement."""

    def describe(self) -> str:
        if self.installed_version is None:
            return f"{self.requirement} (not installed)"
        return f"{self.requirement} (installed {self.installed_version})"


def missing_packages(requirements: Sequence[str] = REQUIREMENTS) -> list[MissingPackage]:
    """The requirements that the running Python does not satisfy.

    Raises
    ------
    ValueError
        If a requirement string cannot be parsed.
    """
    missing = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            raise ValueError(f"requirements: {text!r} is not a requirement ({error})") from error
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(MissingPackage(text, None))
            continue
        if requirement.specifier and not requirement.specifier.contains(version,
                                                                          prereleases=True):
            missing.append(MissingPackage(text, version))
    return missing


def torch_missing() -> bool:
    """True when torch is not installed (it is installed through PyTorchUtils)."""
    try:
        importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return True
    return False


def install_packages(missing: Sequence[MissingPackage], pip_install: Callable[[str], None],
                     progress: Callable[[int, int, str], None] | None = None) -> None:
    """Install each missing package with ``pip_install`` (``slicer.util.pip_install``).

    Parameters
    ----------
    missing:
        From :func:`missing_packages`, after the user agreed.
    pip_install:
        Runs ``pip install <argument>``.
    progress:
        Called as ``progress(done, total, requirement)`` before each install and once at
        the end with ``done == total``.
    """
    total = len(missing)
    for done, package in enumerate(missing):
        if progress is not None:
            progress(done, total, package.requirement)
        pip_install(_quoted(package.requirement))
    if progress is not None:
        progress(total, total, "")


def torch_backend(use_gpu: bool) -> str | None:
    """``forceComputationBackend`` for PyTorchUtils: ``cpu``, or ``None`` to let it pick
    the CUDA build matching the driver."""
    return None if use_gpu else "cpu"


def _quoted(requirement: str) -> str:
    # slicer.util.pip_install splits a string on spaces; a specifier has none, but a
    # marker would, so keep each requirement one argument
    if " " in requirement:
        raise ValueError(f"requirement: {requirement!r} has spaces")
    return requirement
