"""What every training run records about itself, and what it carries over from the model
it replaces.

A retrained model starts from a *base card*: the ``--init-from`` model's card when it is
the same model (same name), else the currently shipped model of that name, if any. From it
the new card keeps

- the ``description`` (intended use, limitations, licence, changelog: written by people,
  so training never rewrites it); a brand-new model with no base gets a plain default
  (:func:`default_description`) that says it has not been reviewed;
- every runtime setting training does not fit (post-processing, the pneumothorax lesion
  rule...), unless a command-line flag sets it: see :func:`runtime_settings`.

Runtime settings training *does* fit (a classifier's calibration, thresholds, input mode)
come from the run itself.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cxr_core.models import Description, ModelCard, Provenance, RuntimeSettings, model_folder
from cxr_core.models.card import CARD_NAME

log = logging.getLogger(__name__)

LIBRARIES = ("torch", "monai", "numpy", "pydicom", "highdicom")
"""Whose versions a card records: what made the weights and reads the images."""
SHARED_DATA = "../shared/data"
"""How cards name the shared data folder (relative to the checkout, not this machine)."""
FIRST_VERSION = "1.0.0"


def git_commit() -> str:
    """The short commit of the code that trained, or ``unknown`` outside a checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`LIBRARIES` (``not installed`` when missing)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def citation(source_md: Path) -> str:
    """The first ``Citation: ...`` line of a dataset's SOURCE.md ('' if none)."""
    if source_md.is_file():
        for line in source_md.read_text().splitlines():
            if "citation" in line.lower() and ":" in line:
                return line.split(":", 1)[1].strip(" *")
    return ""


def dataset_source(data_root: Path, name: str, note: str = "") -> str:
    """One shared dataset as a card lists it:
    ``../shared/data/<name>/SOURCE.md (<citation>[; <note>])``."""
    said = "; ".join(part for part in (citation(data_root / name / "SOURCE.md"), note) if part)
    where = f"{SHARED_DATA}/{name}/SOURCE.md"
    return f"{where} ({said})" if said else where


def dataset_sources(data_root: Path, names: Sequence[str]) -> list[str]:
    """:func:`dataset_source` of each name."""
    return [dataset_source(data_root, name) for name in names]


def make_provenance(*, command: str, datasets: list[str], counts: dict[str, Any],
                    selection: str, seed: int, minutes: float, epochs_run: int,
                    parent_model: str | None = None,
                    details: Mapping[str, Any] | None = None) -> Provenance:
    """A run's provenance, with the current commit and library versions."""
    return Provenance(command=command, commit=git_commit(), datasets=datasets, counts=counts,
                      parent_model=parent_model, selection=selection, seed=seed,
                      minutes=round(minutes, 1), epochs_run=epochs_run,
                      libraries=library_versions(), details=dict(details or {}))


# ------------------------------------------------------------------ the base card


def load_card(name_or_dir: str | Path) -> ModelCard:
    """The card of a model given by name (shipped) or folder, without its weights."""
    return ModelCard.load(model_folder(name_or_dir) / CARD_NAME)


def base_card(name: str, init_from: str | Path | None = None) -> ModelCard | None:
    """The card a new ``name`` model carries its description and runtime from.

    ``init_from``'s card when it is a ``name`` model; otherwise (no ``init_from``, or one
    that only lends weights, e.g. ``lung_seg`` starting a pneumothorax model) the shipped
    ``name`` model's; None when there is neither.
    """
    if init_from is not None:
        card = load_card(init_from)
        if card.name == name:
            return card
    try:
        return load_card(name)
    except FileNotFoundError:
        log.info("no shipped %s model: a new model, default description", name)
        return None


def next_version(base: ModelCard | None, version: str | None) -> str:
    """``version`` when given; else the base's next minor version (``1.2.0`` ->
    ``1.3.0``) so new weights never reuse a shipped identifier; else ``1.0.0``."""
    if version:
        return version
    if base is None:
        return FIRST_VERSION
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?", base.version)
    if match is None:
        return f"{base.version}.1"
    return f"{match.group(1)}.{int(match.group(2)) + 1}.0"


def default_description(name: str, task: str) -> Description:
    """What a model with no base card is described as until people write its card."""
    return Description(
        intended_use=f"{name} ({task}) trained with `cxr train`; research use only, not a "
        "medical device.",
        limitations=["No reviewed description yet: this card was written by the training "
                     "command for a model that had no earlier card. Read its provenance and "
                     "evaluation before use, and write its intended use and limitations "
                     "before shipping it."])


def carried_description(base: ModelCard | None, name: str, task: str) -> Description:
    """The base card's description (a copy), else :func:`default_description`."""
    if base is None:
        return default_description(name, task)
    return dataclasses.replace(base.description,
                               limitations=list(base.description.limitations),
                               changelog=[dict(entry) for entry in base.description.changelog])


def runtime_settings(*, fitted: RuntimeSettings, base: ModelCard | None,
                     default: RuntimeSettings) -> RuntimeSettings:
    """The new card's runtime: what training fitted or a flag set explicitly
    (``fitted``), else the base card's, else ``default``."""
    carried = fitted if base is None else fitted.over(base.runtime)
    return carried.over(default)
