"""``cxr models``: list the shipped models, validate a model folder, promote a run.

A training run writes a complete model folder (weights, ``model.json``, ``history.json``)
under ``runs/``; ``cxr models promote RUN`` checks it and only then copies it into the
models folder the engine loads, so a mistyped training command never replaces a
shipped model.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from cxr_core.cli.common import EXIT_OK, EXIT_REFUSED, SubParsers
from cxr_core.models.card import CARD_NAME, HISTORY_NAME, CardError, ModelCard, file_sha256
from cxr_core.models.locate import default_models_dir


class PromotionRefused(Exception):
    """A run folder that may not become a shipped model; the message says why."""


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser("models", help="list, validate and promote model folders")
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
    promote.set_defaults(handler=run_promote)


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


def promote(run: Path, *, name: str | None = None, models_dir: Path | None = None) -> Path:
    """Copy a checked run folder to ``<models_dir>/<name>/`` and return that folder.

    The copy goes to a temporary folder beside the destination first and replaces it in
    one rename, so the engine never sees half a model.
    """
    card = check_model_folder(run)
    target_name = name or card.name
    if not target_name or "/" in target_name or target_name.startswith("."):
        raise PromotionRefused(f"--as: {target_name!r} is not a model folder name")
    destination_root = Path(models_dir or default_models_dir())
    destination_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target_name}-", dir=destination_root))
    for file_name in (CARD_NAME, card.weights_file, HISTORY_NAME):
        if (Path(run) / file_name).is_file():
            shutil.copy2(Path(run) / file_name, staging / file_name)
    for picture in Path(run).glob("training_*.png"):
        shutil.copy2(picture, staging / picture.name)
    target = destination_root / target_name
    previous = destination_root / f".{target_name}.previous"
    if previous.exists():
        shutil.rmtree(previous)
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    if previous.exists():
        shutil.rmtree(previous)
    return target


def run_promote(args: argparse.Namespace) -> int:
    try:
        target = promote(args.run, name=args.name, models_dir=args.models_dir)
    except PromotionRefused as error:
        print(f"cxr models promote: refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    card = ModelCard.load(target / CARD_NAME)
    print(f"promoted {card.identifier} to {target} (weights sha256 {card.weights_sha256})")
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
    return status


def _has_figures(card: ModelCard) -> bool:
    figures = {key for key in card.evaluation if key != "evaluated_by"}
    return bool(figures)


def _task_word(card: ModelCard) -> str:
    return {"lung_seg": "lung"}.get(card.name, card.name)
