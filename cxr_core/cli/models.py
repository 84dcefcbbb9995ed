"""``cxr models``: list the shipped models, validate a model folder, promote a run.

A training run writes a complete model folder (weights, ``model.json``, ``history.json``)
under ``runs/``; ``cxr models promote RUN`` checks it and only then copies it into the
models folder the engine loads, so a mistyped training command never replaces a
shipped model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxr_core.cli.common import EXIT_OK, EXIT_REFUSED, SubParsers
from cxr_core.models.card import CARD_NAME, CardError, ModelCard, file_sha256
from cxr_core.models.locate import default_models_dir
from cxr_core.models.versions import (
    VERSIONS_DIR,
    active_card,
    archive,
    archived_versions,
    copy_folder,
    pinned_models_dir,
    promotions,
    record,
    worse_than,
)
from cxr_core.writers.labelstore import utc_now


class PromotionRefused(Exception):
    """A run folder that may not become a shipped model; the message says why."""


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser("models", help="list, validate, promote and roll back models")
    actions = parser.add_subparsers(dest="action", required=True)
    listed = actions.add_parser("list", help="the models the engine loads")
    listed.add_argument("--models-dir", type=Path, default=None)
    listed.set_defaults(handler=run_list)
    validate = actions.add_parser("validate", help="check a model folder's card and weights")
    validate.add_argument("folder", type=Path)
    validate.set_defaults(handler=run_validate)
    promote = actions.add_parser(
        "promote", help="copy a training run into the models folder after checking it")
    promote.add_argument("run", type=Path, help="a run folder (from cxr train or "
                         "cxr evaluate --write-card)")
    promote.add_argument("--as", dest="name", default=None,
                         help="model name to ship it as (default: the card's name)")
    promote.add_argument("--models-dir", type=Path, default=None,
                         help="destination models folder (default: the shipped models)")
    promote.add_argument("--force", action="store_true",
                         help="promote even when its held-out figures are worse than the "
                         "active model's (or cannot be compared)")
    promote.set_defaults(handler=run_promote)
    back = actions.add_parser("rollback", help="make an earlier kept version active again")
    back.add_argument("name", help="model folder name (e.g. lung_seg)")
    back.add_argument("--to", default=None,
                      help="version to restore (default: the one the active one replaced)")
    back.add_argument("--models-dir", type=Path, default=None)
    back.set_defaults(handler=run_rollback)


def check_model_folder(folder: Path) -> ModelCard:
    """The folder's card, after checking that it parses, names weights whose sha256 it
    records, and carries test figures from ``cxr evaluate``.

    Raises
    ------
    PromotionRefused
        Saying what is missing or wrong.
    """
    card_path = Path(folder) / CARD_NAME
    if not card_path.is_file():
        raise PromotionRefused(f"{folder}: no {CARD_NAME} (not a model folder)")
    try:
        card = ModelCard.load(card_path)
    except CardError as error:
        raise PromotionRefused(f"{card_path}: {error}") from None
    weights = Path(folder) / card.weights_file
    if not weights.is_file():
        raise PromotionRefused(f"{folder}: weights file {card.weights_file} is missing")
    if not card.weights_sha256 or file_sha256(weights) != card.weights_sha256:
        raise PromotionRefused(f"{weights}: does not match the card's weights_sha256")
    if not _has_figures(card):
        raise PromotionRefused(f"{card_path}: no evaluation figures (run cxr evaluate "
                               f"{_task_word(card)} --write-card, or train it with cxr train)")
    return card


def promote(run: Path, *, name: str | None = None, models_dir: Path | None = None,
            force: bool = False) -> Path:
    """Make a checked run folder the active ``<models_dir>/<name>/`` and return it.

    The run is kept under ``versions/`` first (as is the model it replaces), so a
    rollback or a pinned engine can load either again. The copy goes to a staging folder
    beside the destination and replaces it in one rename, so the engine never sees half
    a model.

    Raises
    ------
    PromotionRefused
        For a run that fails :func:`check_model_folder`, whose version is already kept
        with other weights, or (without ``force``) whose held-out figure is worse than
        the model it replaces: the message says which figures.
    """
    card = check_model_folder(run)
    target_name = name or card.name
    if not target_name or "/" in target_name or target_name.startswith(".") or (
            target_name == VERSIONS_DIR):
        raise PromotionRefused(f"--as: {target_name!r} is not a model folder name")
    destination_root = Path(models_dir or default_models_dir())
    current = active_card(destination_root, target_name)
    reason = worse_than(card, current) if current is not None else None
    if reason is not None and not force:
        raise PromotionRefused(f"{reason}; not promoted (--force to promote anyway)")
    try:
        if current is not None:
            archive(destination_root / target_name, destination_root, target_name)
        kept = archive(Path(run), destination_root, target_name)
    except ValueError as error:
        raise PromotionRefused(str(error)) from None
    target = destination_root / target_name
    copy_folder(kept, target)
    record(destination_root, target_name, {
        "action": "promote", "version": card.version, "at": utc_now(),
        "replaced": current.version if current else None, "forced": bool(reason and force),
        "reason": reason or ""})
    return target


def rollback(name: str, *, to: str | None = None, models_dir: Path | None = None) -> ModelCard:
    """Make a kept version of ``name`` active again: ``to``, else the one the active
    version replaced when it was promoted; its card is returned.

    Raises
    ------
    PromotionRefused
        When there is nothing to roll back to, or ``to`` is not kept.
    """
    root = Path(models_dir or default_models_dir())
    current = active_card(root, name)
    if current is None:
        raise PromotionRefused(f"{name}: no active model in {root}")
    target_version = to or _replaced_by(root, name, current.version)
    if target_version == current.version:
        raise PromotionRefused(f"{name}@{current.version} is already active")
    if target_version is None:
        raise PromotionRefused(f"{name}@{current.version}: no earlier version recorded "
                               f"(kept: {', '.join(archived_versions(root, name)) or 'none'}); "
                               "use --to VERSION")
    try:
        source = pinned_models_dir(root, name, target_version) / name
        archive(root / name, root, name)
    except (FileNotFoundError, ValueError) as error:
        raise PromotionRefused(str(error)) from None
    copy_folder(source, root / name)
    record(root, name, {"action": "rollback", "version": target_version, "at": utc_now(),
                        "replaced": current.version})
    return ModelCard.load(root / name / CARD_NAME)


def _replaced_by(root: Path, name: str, version: str) -> str | None:
    """The version the latest promotion of ``version`` replaced."""
    events = [e for e in promotions(root, name)
              if e.get("action") == "promote" and e.get("version") == version]
    return events[-1].get("replaced") if events else None


def run_promote(args: argparse.Namespace) -> int:
    try:
        target = promote(args.run, name=args.name, models_dir=args.models_dir,
                         force=args.force)
    except PromotionRefused as error:
        print(f"cxr models promote: refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    card = ModelCard.load(target / CARD_NAME)
    print(f"promoted {card.identifier} to {target} (weights sha256 {card.weights_sha256})")
    return EXIT_OK


def run_rollback(args: argparse.Namespace) -> int:
    try:
        card = rollback(args.name, to=args.to, models_dir=args.models_dir)
    except PromotionRefused as error:
        print(f"cxr models rollback: refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"{args.name} is now {card.identifier} (weights sha256 {card.weights_sha256})")
    return EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    try:
        card = check_model_folder(args.folder)
    except PromotionRefused as error:
        print(f"cxr models validate: {error}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"{card.identifier}: card valid, weights match, evaluated by "
          f"{card.evaluation.get('evaluated_by', 'training')}")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    root = Path(args.models_dir or default_models_dir())
    print(f"models in {root}")
    status = EXIT_OK
    for folder in sorted(p for p in root.iterdir() if (p / CARD_NAME).is_file()):
        try:
            card = check_model_folder(folder)
        except PromotionRefused as error:
            print(f"  {folder.name:<14} INVALID: {error}")
            status = EXIT_REFUSED
            continue
        print(f"  {folder.name:<14} {card.identifier:<22} {card.task:<15} "
              f"sha256 {card.weights_sha256[:16]}  {card.provenance.command}")
        kept = archived_versions(root, folder.name)
        if kept:
            parent = f"; parent {card.provenance.parent_model}" if (
                card.provenance.parent_model) else ""
            print(f"  {'':<14} kept versions: {', '.join(kept)} (active {card.version}"
                  f"{parent})")
    return status


def _has_figures(card: ModelCard) -> bool:
    figures = {key for key in card.evaluation if key != "evaluated_by"}
    return bool(figures)


def _task_word(card: ModelCard) -> str:
    return {"lung_seg": "lung"}.get(card.name, card.name)
