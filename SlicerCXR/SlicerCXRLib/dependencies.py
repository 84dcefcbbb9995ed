"""Which Python packages SlicerCXR needs in Slicer, which are missing, how to install them.

Nothing is installed without the caller asking: the module widget shows the list and
installs only after the user agrees. torch goes through the PyTorch extension
(``PyTorchUtils``), which picks a CUDA or CPU build; the rest through pip, one package at
a time so progress can be reported.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

TORCH_REQUIREMENT = ">=2.1"
"""Passed to ``PyTorchUtilsLogic().installTorch(torchVersionRequirement=...)``."""

# cxr_core's own dependencies that Slicer does not bundle (Slicer ships numpy, scipy,
# pillow? not always, SimpleITK, pydicom with its DICOM module). torch is not here: it
# is installed through the PyTorch extension.
REQUIREMENTS: tuple[str, ...] = (
    "monai==1.6.1",
    "pydicom>=3.0",
    "highdicom>=0.25",
    "pylibjpeg>=2.0",
    "pylibjpeg-openjpeg>=2.3",
    "pylibjpeg-libjpeg>=2.1",
    "numpy>=1.26",
    "scipy>=1.11",
    "pillow>=10",
    "tqdm>=4.66",
    "matplotlib>=3.8",
)


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
