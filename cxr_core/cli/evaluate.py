"""``cxr evaluate gate|lung|findings|pneumothorax``: re-measure a model on a split.

Figures, montages and plots go to ``--out``. With ``--write-card`` (test split only) the
``--out`` folder also becomes a complete model folder: the model's card with the new
figures, a copy of its weights, its ``history.json`` and training curves. The evaluated
model's own folder is never rewritten; ``cxr models promote <out>`` ships the result.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cxr_core.cli.common import DEFAULT_DATA_ROOT, EXIT_OK, SubParsers
from cxr_core.cli.train import add_pneumothorax_sources, pneumothorax_sources
from cxr_core.models.card import CARD_NAME, HISTORY_NAME, CardError, ModelCard, model_folder

WRITE_CARD_HELP = ("make --out a complete model folder: this model's card with these test "
                   "figures, a copy of its weights and history (for cxr models promote)")


def add_parser(sub: SubParsers) -> None:
    """``cxr evaluate`` and its tasks."""
    parser = sub.add_parser("evaluate", help="evaluate a model on a split")
    tasks = parser.add_subparsers(dest="task", required=True)
    gate = tasks.add_parser("gate", help="refusal rates per source (false refusals of "
                            "frontal chests), orientation detection, with Wilson CIs")
    gate.add_argument("--model", default="chest_gate", help="model name or folder")
    gate.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    _add_common(gate, run_gate)

    lung = tasks.add_parser("lung", help="Dice / IoU per structure, montage, curves")
    lung.add_argument("--model", default="lung_seg", help="model name or folder")
    lung.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    _add_common(lung, run_lung)

    findings = tasks.add_parser("findings", help="AUC/sensitivity/specificity with bootstrap "
                                "CIs per view, calibration, ROC, heat maps, pointing game")
    findings.add_argument("--model", default="findings", help="model name or folder")
    findings.add_argument("--lung-model", default="lung_seg")
    findings.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    findings.add_argument("--leave-out-run", type=Path, action="append", default=[],
                          help="a `cxr train findings --without SOURCE` run folder: its "
                          "figures on the left-out source go into the written card; repeat")
    _add_common(findings, run_findings)

    ptx = tasks.add_parser("pneumothorax", help="Dice on positives, Kaggle mean Dice, "
                           "detection AUC with bootstrap intervals, source check")
    add_pneumothorax_sources(ptx)
    ptx.add_argument("--model", default="pneumothorax", help="model name or folder")
    ptx.add_argument("--lung-model", default="lung_seg",
                     help="lung model for the thorax gate and the healthy-lung source check "
                     "('' to skip)")
    ptx.add_argument("--bootstrap", type=int, default=2000)
    _add_common(ptx, run_pneumothorax)

    robustness = tasks.add_parser(
        "robustness", help="before/after table of PACS-style changes (turns, mirroring, "
        "frames, corners, text, JPEG, rescaling, bit depth, gamma, inversion)")
    robustness.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    robustness.add_argument("--out", type=Path, required=True)
    robustness.set_defaults(handler=run_robustness, parser=robustness)


def _add_common(parser: argparse.ArgumentParser,
                handler: Callable[[argparse.Namespace], int]) -> None:
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--write-card", action="store_true", help=WRITE_CARD_HELP)
    parser.set_defaults(handler=handler, parser=parser)


def _check_write_card(args: argparse.Namespace) -> Path | None:
    """The evaluated model's folder when ``--write-card`` may go ahead (else exits)."""
    if not args.write_card:
        return None
    if args.split != "test":
        args.parser.error("--write-card records test figures: use --split test")
    source = model_folder(args.model).resolve()
    if Path(args.out).resolve() == source:
        args.parser.error(f"--out {args.out} is the model's own folder; --write-card writes "
                          "a new model folder (cxr models promote ships it)")
    return source


def write_model_folder(card: ModelCard, source: Path, out: Path,
                       evaluation: Mapping[str, Any], task: str) -> Path:
    """``out`` as a complete model folder: ``card`` with ``evaluation`` (and who measured
    it), the weights and history copied from ``source``, and its training curves."""
    out.mkdir(parents=True, exist_ok=True)
    card.evaluation = dict(evaluation) | {"evaluated_by": f"cxr evaluate {task} --write-card"}
    for name in (card.weights_file, HISTORY_NAME):
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    for picture in source.glob("training_*.png"):
        if not (out / picture.name).exists():
            shutil.copy2(picture, out / picture.name)
    card.save(out / CARD_NAME)
    print(f"card with these figures, weights and history written to {out} "
          f"(cxr models promote {out} ships it)")
    return out


# -------------------------------------------------------------------------- handlers


def run_gate(args: argparse.Namespace) -> int:
    """The chest gate on a split: refusals per source and orientation detection."""
    source = _check_write_card(args)
    from cxr_core.stages.gate import ChestGate
    from cxr_core.training.gate_data import gate_samples
    from cxr_core.training.gate_evaluate import evaluate_gate
    from cxr_core.training.report import print_gate_figures

    gate = ChestGate.load(args.model)
    samples = [s for s in gate_samples(args.data_root) if s.split == args.split]
    figures = evaluate_gate(gate, samples, args.out)
    (args.out / "metrics.json").write_text(json.dumps(figures, indent=2) + "\n")
    if source is not None:
        write_model_folder(gate.card, source, args.out, figures, "gate")
    print_gate_figures(figures)
    print(f"metrics.json in {args.out}")
    return EXIT_OK


def run_robustness(args: argparse.Namespace) -> int:
    """What PACS-style changes do to the answers, before and after the gate and padding."""
    from cxr_core.training.robustness import evaluate_robustness

    figures = evaluate_robustness(args.data_root, args.out)
    (args.out / "robustness.json").write_text(json.dumps(figures, indent=2) + "\n")
    print((args.out / "robustness.md").read_text())
    return EXIT_OK


def run_lung(args: argparse.Namespace) -> int:
    """Dice / IoU of a lung model on a split (and its training curves)."""
    source = _check_write_card(args)
    from cxr_core.models import load_history
    from cxr_core.segmentation import Segmenter
    from cxr_core.training.data import shared_lung_samples
    from cxr_core.training.lung import evaluate_lung
    from cxr_core.training.plots import plot_curves
    from cxr_core.training.report import print_lung_figures

    segmenter = Segmenter.load(args.model)
    samples = [s for s in shared_lung_samples(args.data_root) if s.split == args.split]
    figures = evaluate_lung(segmenter, samples, args.out)
    history = load_history(model_folder(args.model))
    if history:
        plot_curves(history, segmenter.card.labels, args.out / "training_curves.png")
    if source is not None:
        # what a fine-tune measured on its corrections cannot be re-measured here: keep it
        kept = {k: v for k, v in segmenter.card.evaluation.items() if k == "datalist_train"}
        write_model_folder(segmenter.card, source, args.out, figures | kept, "lung")
    print_lung_figures(figures)
    print(f"montage and curves in {args.out}")
    return EXIT_OK


def run_findings(args: argparse.Namespace) -> int:
    """The findings classifier as the engine runs it, on a split."""
    source = _check_write_card(args)
    from cxr_core.segmentation import Segmenter
    from cxr_core.stages.findings import FindingsClassifier
    from cxr_core.training.findings_data import nih_findings_samples, nih_multilabel_samples
    from cxr_core.training.findings_evaluate import evaluate_findings
    from cxr_core.training.findings_sources import transfer_limits
    from cxr_core.training.report import print_findings_figures, print_localisation

    classifier = FindingsClassifier.load(args.model)
    left_out = _left_out_sources(args)
    segmenter = Segmenter.load(args.lung_model)  # lung-masked input, and the lung zones
    # the NIH images of both shared NIH sets, as training evaluates them
    samples = nih_findings_samples(args.data_root) + nih_multilabel_samples(args.data_root)
    figures = evaluate_findings(classifier, segmenter,
                                [s for s in samples if s.split == args.split],
                                [s for s in samples if s.boxes], args.out, split=args.split)
    (args.out / "metrics.json").write_text(json.dumps(figures, indent=2) + "\n")
    if source is not None:
        # calibration and the input-mode comparison were measured in training on val and
        # test tensors; the engine-path figures replace the test figures
        card = classifier.card
        evaluation = card.evaluation | {
            "split": "test", "test": figures["figures"], "test_ece": figures["ece"],
            "localisation": figures["localisation"],
            "engine_path_test_auc": {label: shown["all"]["auc"]
                                     for label, shown in figures["figures"].items()}}
        if left_out:
            evaluation["leave_one_source_out"] = left_out
        card.evaluation = evaluation  # the limitations are generated from the figures
        card.description.limitations = transfer_limits(card)
        write_model_folder(card, source, args.out, evaluation, "findings")
    print_findings_figures(figures["figures"])
    print(f"ECE {figures['ece']}  thresholds {figures['thresholds']}")
    print_localisation(figures["localisation"])
    print(f"predictions.csv, roc.png, confusion.png, calibration.png, heatmaps.png, "
          f"metrics.json in {args.out}")
    return EXIT_OK


def _left_out_sources(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`~cxr_core.training.findings_sources.leave_one_source_out` of each
    ``--leave-out-run`` folder (a one-line refusal for one that is not such a run)."""
    from cxr_core.training.findings_sources import leave_one_source_out

    left_out: dict[str, Any] = {}
    for run in args.leave_out_run:
        try:
            left_out |= leave_one_source_out(ModelCard.load(run / CARD_NAME))
        except (CardError, OSError, ValueError) as error:
            args.parser.error(f"--leave-out-run {run}: {error}")
    return left_out


def run_pneumothorax(args: argparse.Namespace) -> int:
    """The pneumothorax detector on a split, with the source check."""
    source = _check_write_card(args)
    from cxr_core.segmentation import Segmenter
    from cxr_core.stages.pneumothorax import PneumothoraxDetector
    from cxr_core.training.pneumothorax_card import limits_statement
    from cxr_core.training.pneumothorax_evaluate import evaluate_pneumothorax
    from cxr_core.training.pneumothorax_sources import MaskFiles
    from cxr_core.training.report import print_pneumothorax_figures

    detector = PneumothoraxDetector.load(args.model)
    lung = Segmenter.load(args.lung_model) if args.lung_model else None
    sources = pneumothorax_sources(args)
    # the images a model trained on never count as unseen in its NIH check
    details = detector.segmenter.card.provenance.details or {}
    sources.nih_labelled = sources.nih_labelled or bool(details.get("nih_labelled"))
    figures = evaluate_pneumothorax(detector, sources.samples(MaskFiles()), args.out,
                                    split=args.split, lung=lung, bootstrap=args.bootstrap,
                                    data_root=sources.data_root)
    (args.out / "metrics.json").write_text(json.dumps(figures, indent=2) + "\n")
    if source is not None:
        card = detector.segmenter.card
        write_model_folder(card, source, args.out, figures | {
            "limits": limits_statement(card.provenance.counts, figures)}, "pneumothorax")
    print_pneumothorax_figures(figures)
    print(f"metrics.json and montage in {args.out}")
    return EXIT_OK
