"""The ``cxr`` command: analyze files, train and evaluate models.

Exit codes: 0 all inputs analysed; 2 some input refused (the others are still done);
1 an internal error.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from cxr_core.models import default_models_dir

EXIT_REFUSED = 2
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("analyze", help="analyse DICOM / PNG / JPEG chest radiographs")
    parser.add_argument("inputs", nargs="+", type=Path, help="files or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.set_defaults(handler=_run_analyze)


def _add_train(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a model")
    tasks = parser.add_subparsers(dest="task", required=True)
    lung = tasks.add_parser("lung", help="right/left lung + heart segmentation")
    lung.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    lung.add_argument("--datalist", type=Path, default=None,
                      help="extra labels: MONAI datalist JSON (e.g. a SlicerCXR label store)")
    lung.add_argument("--datalist-only", action="store_true",
                      help="train on the datalist's images only (fine-tuning on corrections); "
                      "the shared val split still picks the checkpoint and test split scores")
    lung.add_argument("--init-from", default=None, help="model name or folder to fine-tune")
    lung.add_argument("--out", type=Path, default=default_models_dir() / "lung_seg")
    lung.add_argument("--size", type=int, default=256)
    lung.add_argument("--epochs", type=int, default=60)
    lung.add_argument("--batch-size", type=int, default=8)
    lung.add_argument("--learning-rate", type=float, default=2e-3)
    lung.add_argument("--patience", type=int, default=15)
    lung.add_argument("--max-minutes", type=float, default=40.0)
    lung.add_argument("--seed", type=int, default=0)
    lung.add_argument("--version", default="1.0.0")
    lung.set_defaults(handler=_run_train_lung)
    _add_train_findings(tasks)
    _add_train_pneumothorax(tasks)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="evaluate a model on a split")
    tasks = parser.add_subparsers(dest="task", required=True)
    lung = tasks.add_parser("lung", help="Dice / IoU per structure, montage, curves")
    lung.add_argument("--model", default="lung_seg", help="model name or folder")
    lung.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    lung.add_argument("--split", default="test", choices=("train", "val", "test"))
    lung.add_argument("--out", type=Path, required=True)
    lung.add_argument("--write-card", action="store_true",
                      help="store these figures in the model card (test split only)")
    lung.set_defaults(handler=_run_evaluate_lung)
    _add_evaluate_findings(tasks)
    _add_evaluate_pneumothorax(tasks)


def _add_pneumothorax_sources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="shared data (SIIM positives + NIH normals as negatives)")
    parser.add_argument("--no-shared", action="store_true", help="do not use --data-root")
    parser.add_argument("--nih-negatives", type=int, default=150,
                        help="NIH 'No Finding' negatives per split (shared data)")
    parser.add_argument("--nih-pneumonia-negatives", type=int, default=0,
                        help="NIH Pneumonia images without a Pneumothorax label as "
                        "negatives, per split (shared data)")
    parser.add_argument("--keep-siim-negatives", action="store_true",
                        help="use the 3 shared SIIM negatives by their split instead of "
                        "holding them out for the source check")
    parser.add_argument("--siim-dicom", type=Path, default=None,
                        help="SIIM-ACR layout: folder of DICOM files (with --siim-csv)")
    parser.add_argument("--siim-csv", type=Path, default=None,
                        help="SIIM-ACR RLE CSV (ImageId, EncodedPixels; .csv or .csv.gz)")
    parser.add_argument("--folder", type=Path, action="append", default=[],
                        help="images/ + masks/ PNG folder (all-zero mask = negative); repeat")
    parser.add_argument("--datalist", type=Path, action="append", default=[],
                        help="MONAI datalist JSON or SlicerCXR label store datalist; repeat")


def _add_train_pneumothorax(tasks: argparse._SubParsersAction) -> None:
    ptx = tasks.add_parser("pneumothorax", help="pneumothorax segmentation")
    _add_pneumothorax_sources(ptx)
    ptx.add_argument("--init-from", default=None,
                     help="model name or folder whose matching layers start the network "
                     "(e.g. lung_seg)")
    ptx.add_argument("--out", type=Path, default=default_models_dir() / "pneumothorax")
    ptx.add_argument("--size", type=int, default=256)
    ptx.add_argument("--epochs", type=int, default=60)
    ptx.add_argument("--batch-size", type=int, default=8)
    ptx.add_argument("--learning-rate", type=float, default=2e-3)
    ptx.add_argument("--patience", type=int, default=15)
    ptx.add_argument("--max-minutes", type=float, default=14.0)
    ptx.add_argument("--positive-zoom", type=float, default=0.5)
    ptx.add_argument("--positive-share", type=float, default=0.5)
    ptx.add_argument("--detail", type=float, default=1.0,
                     help="blur/sharpen jitter range (0 = off)")
    ptx.add_argument("--swap", type=float, default=0.5,
                     help="probability that a drawn image has a lesion region moved in or "
                     "covered, so the image source cannot predict the label (0 = off)")
    ptx.add_argument("--min-area-mm2", type=float, default=200.0)
    ptx.add_argument("--min-area-fraction", type=float, default=0.004)
    ptx.add_argument("--lung-model", default="lung_seg",
                     help="lung model for the healthy-lung source check ('' to skip)")
    ptx.add_argument("--seed", type=int, default=0)
    ptx.add_argument("--version", default="1.0.0")
    ptx.set_defaults(handler=_run_train_pneumothorax)


def _add_evaluate_pneumothorax(tasks: argparse._SubParsersAction) -> None:
    ptx = tasks.add_parser("pneumothorax", help="Dice on positives, Kaggle mean Dice, "
                           "detection AUC with bootstrap intervals, source check")
    _add_pneumothorax_sources(ptx)
    ptx.add_argument("--model", default="pneumothorax", help="model name or folder")
    ptx.add_argument("--lung-model", default="lung_seg",
                     help="lung model for the healthy-lung source check ('' to skip)")
    ptx.add_argument("--split", default="test", choices=("train", "val", "test"))
    ptx.add_argument("--bootstrap", type=int, default=2000)
    ptx.add_argument("--out", type=Path, required=True)
    ptx.add_argument("--write-card", action="store_true",
                     help="record the test figures in the model's card")
    ptx.set_defaults(handler=_run_evaluate_pneumothorax)


def _run_analyze(args: argparse.Namespace) -> int:
    from cxr_core.batch import analyze_paths

    return analyze_paths(args.inputs, args.out, models_dir=args.models_dir)


def _run_train_lung(args: argparse.Namespace) -> int:
    from cxr_core.training.lung import train_lung
    from cxr_core.training.segtrain import SegTrainConfig

    config = SegTrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, patience=args.patience,
                            max_minutes=args.max_minutes, seed=args.seed)
    card = train_lung(data_root=args.data_root, out_dir=args.out, datalist=args.datalist,
                      init_from=args.init_from, size=args.size, config=config,
                      version=args.version, command=args.command_line,
                      datalist_only=args.datalist_only)
    _print_lung_metrics(card.metrics)
    print(f"saved {args.out}")
    return 0


def _run_evaluate_lung(args: argparse.Namespace) -> int:
    from cxr_core.segmentation import Segmenter
    from cxr_core.training.data import shared_lung_samples
    from cxr_core.training.lung import evaluate_lung
    from cxr_core.training.plots import plot_curves

    segmenter = Segmenter.load(args.model)
    samples = [s for s in shared_lung_samples(args.data_root) if s.split == args.split]
    metrics = evaluate_lung(segmenter, samples, args.out)
    if args.write_card and args.split == "test":
        _write_card_metrics(segmenter.card, args.model, metrics, "lung")
    history = segmenter.card.training.get("history")
    if history:
        plot_curves(history, segmenter.card.labels, args.out / "training_curves.png")
    _print_lung_metrics(metrics)
    print(f"montage and curves in {args.out}")
    return 0


def _write_card_metrics(card, model: str, metrics: dict, task: str) -> None:
    """Record the evaluation in the model's card (the figures the tests hold it to)."""
    from cxr_core.models.card import CARD_NAME, default_models_dir

    folder = Path(model) if (Path(model) / CARD_NAME).is_file() else default_models_dir() / model
    card.metrics = metrics | {"evaluated_by": f"cxr evaluate {task} --write-card"}
    card.save(folder / CARD_NAME)
    print(f"metrics written to {folder / CARD_NAME}")


def _pneumothorax_sources(args: argparse.Namespace):
    from cxr_core.training.pneumothorax import sources_from_args

    return sources_from_args(None if args.no_shared else args.data_root, args.nih_negatives,
                             args.keep_siim_negatives, args.siim_dicom, args.siim_csv,
                             args.folder, args.datalist, args.nih_pneumonia_negatives)


def _run_train_pneumothorax(args: argparse.Namespace) -> int:
    from cxr_core.training.pneumothorax import PtxTrainOptions, train_pneumothorax
    from cxr_core.training.segtrain import SegTrainConfig

    config = SegTrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, patience=args.patience,
                            max_minutes=args.max_minutes, seed=args.seed)
    options = PtxTrainOptions(size=args.size, init_from=args.init_from,
                              positive_zoom=args.positive_zoom,
                              positive_share=args.positive_share, detail=args.detail,
                              swap=args.swap,
                              min_area_mm2=args.min_area_mm2,
                              min_area_fraction=args.min_area_fraction, version=args.version,
                              lung_model=args.lung_model or None)
    card = train_pneumothorax(sources=_pneumothorax_sources(args), out_dir=args.out,
                              command=args.command_line, config=config, options=options)
    _print_pneumothorax_metrics(card.metrics)
    print(f"saved {args.out}")
    return 0


def _run_evaluate_pneumothorax(args: argparse.Namespace) -> int:
    import json

    from cxr_core.pneumothorax import PneumothoraxDetector
    from cxr_core.segmentation import Segmenter
    from cxr_core.training.pneumothorax import (
        MaskFiles,
        evaluate_pneumothorax,
        limits_statement,
    )

    detector = PneumothoraxDetector.load(args.model)
    lung = Segmenter.load(args.lung_model) if args.lung_model else None
    sources = _pneumothorax_sources(args)
    metrics = evaluate_pneumothorax(detector, sources.samples(MaskFiles()), args.out,
                                    split=args.split, lung=lung, bootstrap=args.bootstrap,
                                    data_root=sources.data_root)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if args.write_card and args.split == "test":
        card = detector.segmenter.card
        card.extra["limits"] = limits_statement(card.training["counts"], metrics)
        _write_card_metrics(card, args.model, metrics, "pneumothorax")
    _print_pneumothorax_metrics(metrics)
    print(f"metrics.json and montage in {args.out}")
    return 0


def _print_pneumothorax_metrics(metrics: dict) -> None:
    def interval(entry: dict, key: str) -> str:
        if entry.get(key) is None:
            return "n/a"
        low, high = entry["ci95"]
        return f"{entry[key]:.3f} (95% CI {low:.3f}-{high:.3f})"

    print(f"split {metrics['split']}: {metrics['caveat']}")
    print(f"Dice on positives   n={metrics['dice_positive']['n']:<4} "
          f"{interval(metrics['dice_positive'], 'mean')}")
    print(f"Kaggle mean Dice    n={metrics['kaggle_mean_dice']['n']:<4} "
          f"{interval(metrics['kaggle_mean_dice'], 'mean')}")
    print(f"detection AUC       {interval(metrics['detection_auc'], 'auc')}")
    print(f"sensitivity {metrics['sensitivity']['value']}  "
          f"specificity {metrics['specificity']['value']}")
    check = metrics["source_check"]
    for name in ("auc_siim_vs_nih_negative", "auc_siim_healthy_vs_nih_lung",
                 "auc_siim_style_vs_as_is", "auc_nih_pneumothorax_vs_normal",
                 "auc_nih_pneumothorax_vs_pneumonia"):
        entry = check.get(name)
        if entry is None:
            continue
        print(f"source check {name}: n={entry['n_positive']}/{entry['n_negative']} "
              f"{interval(entry, 'auc')}")
    change = check.get("siim_style_change", {"n": 0})
    if change["n"]:
        print(f"source check SIIM-style re-encoding changes the probability by "
              f"{interval(change, 'mean')} on average, at most {change['max_abs']:.3f}")


def _add_train_findings(tasks: argparse._SubParsersAction) -> None:
    findings = tasks.add_parser("findings", help="abnormal / pneumonia classifier: trains "
                                "whole-image and lung-masked inputs, ships the better")
    findings.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    findings.add_argument("--nih-table", type=Path, default=None,
                          help="extra training rows: NIH Data_Entry-style CSV (with --nih-images)")
    findings.add_argument("--nih-images", type=Path, default=None)
    findings.add_argument("--inputs", nargs="+", default=["whole_image", "lung_masked"],
                          choices=("whole_image", "lung_masked"))
    findings.add_argument("--lung-model", default="lung_seg", help="lungs for masking")
    findings.add_argument("--out", type=Path, default=default_models_dir() / "findings")
    findings.add_argument("--size", type=int, default=224)
    findings.add_argument("--epochs", type=int, default=25)
    findings.add_argument("--batch-size", type=int, default=16)
    findings.add_argument("--learning-rate", type=float, default=3e-3)
    findings.add_argument("--patience", type=int, default=8)
    findings.add_argument("--max-minutes", type=float, default=9.0, help="per input mode")
    findings.add_argument("--seed", type=int, default=0)
    findings.add_argument("--version", default="1.0.0")
    findings.set_defaults(handler=_run_train_findings)


def _add_evaluate_findings(tasks: argparse._SubParsersAction) -> None:
    findings = tasks.add_parser("findings", help="AUC/sensitivity/specificity with bootstrap "
                                "CIs per view, calibration, ROC, heat maps, pointing game")
    findings.add_argument("--model", default="findings", help="model name or folder")
    findings.add_argument("--lung-model", default="lung_seg")
    findings.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    findings.add_argument("--split", default="test", choices=("train", "val", "test"))
    findings.add_argument("--out", type=Path, required=True)
    findings.set_defaults(handler=_run_evaluate_findings)


def _run_train_findings(args: argparse.Namespace) -> int:
    from cxr_core.training.findings import (
        ClassifierTrainConfig,
        nih_table_samples,
        train_findings,
    )

    if (args.nih_table is None) != (args.nih_images is None):
        raise SystemExit("cxr train findings: --nih-table and --nih-images go together")
    extra = nih_table_samples(args.nih_table, args.nih_images) if args.nih_table else []
    config = ClassifierTrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                   learning_rate=args.learning_rate, patience=args.patience,
                                   max_minutes=args.max_minutes, seed=args.seed)
    card = train_findings(data_root=args.data_root, out_dir=args.out, command=args.command_line,
                          modes=args.inputs, size=args.size, config=config,
                          lung_model=args.lung_model, extra=extra, version=args.version)
    for mode, figures in card.metrics["input_modes"].items():
        print(f"{mode:<12} val mean AUC {figures['val_mean_auc']:.4f}  test AUC "
              f"{figures['test_auc']}  by view {figures['test_auc_by_view']}")
    _print_findings_figures(card.metrics["test"])
    print(f"shipped input mode {card.extra['input']}; saved {args.out}")
    return 0


def _run_evaluate_findings(args: argparse.Namespace) -> int:
    import json

    from cxr_core.findings import FindingsClassifier
    from cxr_core.segmentation import Segmenter
    from cxr_core.training.findings import evaluate_findings, nih_findings_samples

    classifier = FindingsClassifier.load(args.model)
    segmenter = Segmenter.load(args.lung_model) if classifier.lung_masked else None
    samples = nih_findings_samples(args.data_root)
    metrics = evaluate_findings(classifier, segmenter,
                                [s for s in samples if s.split == args.split],
                                [s for s in samples if s.boxes], args.out, split=args.split)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _print_findings_figures(metrics["figures"])
    print(f"ECE {metrics['ece']}  thresholds {metrics['thresholds']}")
    for group, figures in metrics["localisation"].items():
        if isinstance(figures, dict) and figures.get("n"):
            print(f"heat maps on NIH boxes ({group}): pointing game {figures['pointing_game']:.3f}"
                  f" ({figures['hits']}/{figures['n']}), IoU mean {figures['iou_mean']:.3f}")
    print(f"predictions.csv, roc.png, confusion.png, calibration.png, heatmaps.png, "
          f"metrics.json in {args.out}")
    return 0


def _print_findings_figures(figures: dict) -> None:
    def interval(entry: dict, key: str) -> str:
        low, high = entry[f"{key}_ci95"]
        return f"{entry[key]:.3f} ({low:.3f}-{high:.3f})"

    print(f"{'label':<10} {'view':<4} {'n':>4} {'pos':>4}  {'AUC (95% CI)':<22}"
          f"{'sensitivity':<22}{'specificity':<22}")
    for label, groups in figures.items():
        for view, entry in groups.items():
            if not isinstance(entry, dict):
                continue
            print(f"{label:<10} {view:<4} {entry['n']:>4} {entry['n_positive']:>4}  "
                  f"{interval(entry, 'auc'):<22}{interval(entry, 'sensitivity'):<22}"
                  f"{interval(entry, 'specificity'):<22}")
        print(f"{label:<10} a score that only says 'PA': AUC {groups['view_only_auc']:.3f}")


def _print_lung_metrics(metrics: dict) -> None:
    print(f"{'structure':<36} {'n':>4} {'Dice':>7} {'median':>7} {'IoU':>7}")
    for name, m in metrics["per_structure"].items():
        print(f"{name:<36} {m['n']:>4} {m['dice_mean']:>7.4f} {m['dice_median']:>7.4f} "
              f"{m['iou_mean']:>7.4f}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_analyze(sub)
    _add_train(sub)
    _add_evaluate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = "cxr " + shlex.join(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
