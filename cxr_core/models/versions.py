"""Model versions: every promoted version kept, one active, pins, promotion history.

Layout inside a models folder::

    <models_dir>/<name>/                         the active version (what the engine loads)
    <models_dir>/versions/<name>/<version>/<name>/  every version ever promoted, complete
    <models_dir>/versions/<name>/promotions.jsonl   promote / rollback events, oldest first

Each archived version is itself a models folder holding that one model, so an engine
pinned to it (:func:`pinned_models_dir`) loads it exactly as it loads the active one, and
results of an older version stay reproducible from its own weights.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxr_core.models.card import CARD_NAME, ModelCard, file_sha256

VERSIONS_DIR = "versions"
PROMOTIONS_LOG = "promotions.jsonl"


def version_root(models_dir: Path, name: str, version: str) -> Path:
    """The models folder holding ``name`` at ``version`` (``.../<version>/<name>/``)."""
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.+_-]*", version):
        raise ValueError(f"version: {version!r} is not a version string")
    return Path(models_dir) / VERSIONS_DIR / name / version


def archived_versions(models_dir: Path, name: str) -> list[str]:
    """The versions of ``name`` kept under ``versions/``, oldest first."""
    folder = Path(models_dir) / VERSIONS_DIR / name
    if not folder.is_dir():
        return []
    found = [p.name for p in folder.iterdir() if (p / name / CARD_NAME).is_file()]
    return sorted(found, key=_version_key)


def active_card(models_dir: Path, name: str) -> ModelCard | None:
    """The card of the active ``name`` model, or None when there is none."""
    path = Path(models_dir) / name / CARD_NAME
    return ModelCard.load(path) if path.is_file() else None


def archive(folder: Path, models_dir: Path, name: str | None = None) -> Path:
    """Keep a copy of the model folder ``folder`` under ``versions/`` (once per version),
    as model ``name`` (default: its card's name); returns the kept folder.

    Raises
    ------
    ValueError
        When that version is already kept with other weights (an identifier reused).
    """
    card = ModelCard.load(Path(folder) / CARD_NAME)
    name = name or card.name
    target = version_root(models_dir, name, card.version) / name
    if (target / CARD_NAME).is_file():
        kept = ModelCard.load(target / CARD_NAME)
        if kept.weights_sha256 != card.weights_sha256:
            raise ValueError(f"{card.identifier} is already kept with other weights "
                             f"({kept.weights_sha256[:16]}): give the new model a new version")
        return target
    copy_folder(Path(folder), target)
    return target


def copy_folder(source: Path, target: Path) -> None:
    """Copy a model folder's files to ``target`` through a staging folder and one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    for path in source.iterdir():
        if path.is_file():
            shutil.copy2(path, staging / path.name)
    previous = target.parent / f".{target.name}.previous"
    if previous.exists():
        shutil.rmtree(previous)
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    if previous.exists():
        shutil.rmtree(previous)


def pinned_models_dir(models_dir: Path, name: str, version: str) -> Path:
    """The models folder from which ``name`` loads at ``version``: the active one when
    it is that version, else its kept copy.

    Raises
    ------
    FileNotFoundError
        When that version is neither active nor kept (the message lists what is).
    """
    active = active_card(models_dir, name)
    if active is not None and active.version == version:
        return Path(models_dir)
    root = version_root(models_dir, name, version)
    if (root / name / CARD_NAME).is_file():
        card = ModelCard.load(root / name / CARD_NAME)
        if file_sha256(root / name / card.weights_file) != card.weights_sha256:
            raise FileNotFoundError(f"{name}@{version}: kept weights do not match its card")
        return root
    kept = archived_versions(models_dir, name) or ["none"]
    raise FileNotFoundError(f"{name}@{version} is not available (active: "
                            f"{active.version if active else 'none'}; kept: {', '.join(kept)})")


def record(models_dir: Path, name: str, event: Mapping[str, Any]) -> None:
    """Append a promote/rollback event to ``name``'s history."""
    path = Path(models_dir) / VERSIONS_DIR / name / PROMOTIONS_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(dict(event), sort_keys=True) + "\n")


def promotions(models_dir: Path, name: str) -> list[dict[str, Any]]:
    """``name``'s promote/rollback events, oldest first."""
    path = Path(models_dir) / VERSIONS_DIR / name / PROMOTIONS_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


HELD_OUT_FIGURES: dict[str, tuple[str, ...]] = {
    "lung_seg": ("per_structure", "both_lungs", "dice_mean"),
    "pneumothorax": ("dice_positive", "mean"),
}
"""Per model name, where its card keeps the held-out (test split) figure that decides
whether a new version is better: higher is better."""


def held_out_figure(card: ModelCard) -> tuple[float, int | None] | None:
    """The card's headline held-out figure and its number of images, or None."""
    path = HELD_OUT_FIGURES.get(card.name)
    value: Any = card.evaluation
    for key in path or ():
        value = value.get(key) if isinstance(value, Mapping) else None
    if path is None or not isinstance(value, int | float):
        return None
    count = card.evaluation.get("n_images")
    return float(value), int(count) if isinstance(count, int) else None


def worse_than(card: ModelCard, parent: ModelCard) -> str | None:
    """Why ``card`` must not replace ``parent`` without force, or None when it may:
    its held-out figure is lower, or the two cannot be compared."""
    if card.weights_sha256 == parent.weights_sha256:
        return None
    if card.version == parent.version:
        return (f"{card.identifier} reuses the version of the active model with other "
                "weights: give it a new version")
    mine, theirs = held_out_figure(card), held_out_figure(parent)
    what = ".".join(HELD_OUT_FIGURES.get(card.name, ("held-out figure",)))
    if mine is None or theirs is None:
        return (f"{what}: cannot compare {card.identifier} with {parent.identifier} (a "
                "card lacks it)")
    if mine[1] != theirs[1]:
        return (f"{what}: measured on {mine[1]} images for {card.identifier} but "
                f"{theirs[1]} for {parent.identifier}: not the same held-out set")
    if mine[0] < theirs[0]:
        return (f"held-out {what} {mine[0]:.4f} of {card.identifier} is worse than "
                f"{theirs[0]:.4f} of {parent.identifier}")
    return None


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(part)) if part.isdigit() else (1, part)
                 for part in re.split(r"[.+_-]", version))
