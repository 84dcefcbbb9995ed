"""``cxr train gate|lung|findings|pneumothorax``: train a model into a run folder.

A run writes a complete model folder (weights, ``model.json``, ``history.json``, curves
and evaluation figures) to ``runs/<model>-<UTC time>/`` unless ``--out`` names another;
it never writes into the shipped models. ``cxr models promote RUN`` copies a run there.

A retrained model keeps the description and the runtime settings it does not fit (post-
processing, the pneumothorax decision rule) of its base card: the ``--init-from`` model's
when it is the same model, else the shipped one's. Flags that set such a setting default
to "not told" and override the base only when given.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxr_core.cli.common import DEFAULT_DATA_ROOT, EXIT_OK, SubParsers, run_folder

if TYPE_CHECKING:  # the handlers import training (torch) only when they run
    from cxr_core.training.pneumothorax_sources import Sources


@dataclass(frozen=True)
class TaskDefaults:
    """Per-task defaults of the shared training flags."""

    model: str
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    max_minutes: float


LUNG = TaskDefaults("lung_seg", epochs=60, batch_size=8, learning_rate=2e-3, patience=15,
                    max_minutes=40.0)
FINDINGS = TaskDefaults("findings", epochs=25, batch_size=16, learning_rate=3e-3, patience=8,
                        max_minutes=9.0)
PNEUMOTHORAX = TaskDefaults("pneumothorax", epochs=60, batch_size=8, learning_rate=2e-3,
                            patience=15, max_minutes=14.0)
GATE = TaskDefaults("chest_gate", epochs=30, batch_size=32, learning_rate=3e-3, patience=8,
                    max_minutes=30.0)
CONFIG_FLAGS = ("epochs", "batch_size", "learning_rate", "patience", "max_minutes", "seed")
"""Flags that are :class:`~cxr_core.training.loop.TrainConfig` fields of the same name."""


# --------------------------------------------------------------------- shared flags


def add_training_flags(parser: argparse.ArgumentParser, defaults: TaskDefaults, *,
                       max_minutes_help: str = "") -> None:
    """The flags every ``cxr train`` task has, with this task's defaults."""
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=defaults.epochs)
    group.add_argument("--batch-size", type=int, default=defaults.batch_size)
    group.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    group.add_argument("--patience", type=int, default=defaults.patience,
                       help="stop after this many epochs without a better val score")
    group.add_argument("--max-minutes", type=float, default=defaults.max_minutes,
                       help=max_minutes_help or "time cap (the best epoch so far is kept)")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--version", default=None,
                       help="the new model's version (default: the base card's next minor "
                       "version, 1.0.0 for a new model)")
    group.add_argument("--out", type=Path, default=None,
                       help=f"run folder (default: runs/{defaults.model}-<UTC time>/)")


def add_datalist_flag(parser: argparse.ArgumentParser) -> None:
    """``--datalist``, repeatable."""
    parser.add_argument("--datalist", type=Path, action="append", default=[],
                        help="extra labels: MONAI datalist JSON (e.g. a SlicerCXR label "
                        "store's); repeat for several")


def add_pneumothorax_sources(parser: argparse.ArgumentParser) -> None:
    """Where pneumothorax images come from (``cxr train`` and ``cxr evaluate``)."""
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="shared data (SIIM positives + NIH normals as negatives)")
    parser.add_argument("--no-shared", action="store_true", help="do not use --data-root")
    parser.add_argument("--nih-negatives", type=int, default=150,
                        help="NIH 'No Finding' negatives per split (shared data)")
    parser.add_argument("--nih-pneumonia-negatives", type=int, default=0,
                        help="NIH Pneumonia images without a Pneumothorax label as "
                        "negatives, per split (shared data)")
    parser.add_argument("--nih-labelled", action="store_true",
                        help="NIH train-split images labelled Pneumothorax as image-level "
                        "positives (no mask), the other nih_cxr14_multilabel train images as "
                        "negatives (shared data); they stay out of the NIH check")
    parser.add_argument("--keep-siim-negatives", action="store_true",
                        help="use the 3 shared SIIM negatives by their split instead of "
                        "holding them out for the source check")
    parser.add_argument("--siim-dicom", type=Path, default=None,
                        help="SIIM-ACR layout: folder of DICOM files (with --siim-csv)")
    parser.add_argument("--siim-csv", type=Path, default=None,
                        help="SIIM-ACR RLE CSV (ImageId, EncodedPixels; .csv or .csv.gz)")
    parser.add_argument("--folder", type=Path, action="append", default=[],
                        help="images/ + masks/ PNG folder (all-zero mask = negative); repeat")
    add_datalist_flag(parser)


def pneumothorax_sources(args: argparse.Namespace) -> Sources:
    """The :class:`Sources` the flags of :func:`add_pneumothorax_sources` name."""
    from cxr_core.training.pneumothorax_sources import Sources

    return Sources(data_root=None if args.no_shared else args.data_root,
                   nih_negatives=args.nih_negatives,
                   nih_pneumonia_negatives=args.nih_pneumonia_negatives,
                   hold_out_siim_negatives=not args.keep_siim_negatives,
                   nih_labelled=args.nih_labelled,
                   siim_dicom=args.siim_dicom, siim_csv=args.siim_csv,
                   folders=list(args.folder), datalists=list(args.datalist))


def config_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The shared flags that are training-config fields, by field name."""
    return {name: getattr(args, name) for name in CONFIG_FLAGS}


def out_folder(args: argparse.Namespace, defaults: TaskDefaults) -> Path:
    """``--out``, else a new run folder for the task's model."""
    return Path(args.out) if args.out is not None else run_folder(defaults.model)


# --------------------------------------------------------------------------- parsers


def add_parser(sub: SubParsers) -> None:
    """``cxr train`` and its tasks."""
    parser = sub.add_parser("train", help="train a model into a run folder (never into "
                            "the shipped models)")
    tasks = parser.add_subparsers(dest="task", required=True)
    _add_gate(tasks)
    _add_lung(tasks)
    _add_findings(tasks)
    _add_pneumothorax(tasks)


def _add_gate(tasks: SubParsers) -> None:
    gate = tasks.add_parser("gate", help="the chest gate: frontal chest / lateral / other, "
                            "quarter turns, mirroring")
    gate.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    add_training_flags(gate, GATE)
    gate.set_defaults(handler=run_gate, parser=gate)


def _add_lung(tasks: SubParsers) -> None:
    lung = tasks.add_parser("lung", help="right/left lung + heart segmentation")
    lung.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    add_datalist_flag(lung)
    lung.add_argument("--datalist-only", action="store_true",
                      help="train on the datalists' images only (fine-tuning on corrections); "
                      "the shared val split still picks the checkpoint and test split scores")
    lung.add_argument("--init-from", default=None, help="model name or folder to fine-tune")
    lung.add_argument("--size", type=int, default=256)
    add_training_flags(lung, LUNG)
    lung.set_defaults(handler=run_lung, parser=lung)


def _add_findings(tasks: SubParsers) -> None:
    findings = tasks.add_parser("findings", help="multi-label findings classifier (abnormal "
                                "+ NIH labels the data supports), on every shared source")
    findings.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    findings.add_argument("--nih-table", type=Path, default=None,
                          help="extra training rows: NIH Data_Entry-style CSV (with --nih-images)")
    findings.add_argument("--nih-images", type=Path, default=None)
    findings.add_argument("--chexpert-csv", type=Path, default=None,
                          help="extra training rows: CheXpert train.csv (frontal images)")
    findings.add_argument("--chexpert-root", type=Path, default=None,
                          help="the CheXpert folder its CSV paths start from")
    findings.add_argument("--datalist", type=Path, default=None,
                          help="extra rows: a MONAI datalist JSON ('training' list; "
                          "labels as a list in the card's label order or a name->0/1 map)")
    findings.add_argument("--inputs", nargs="+", default=["lung_masked"],
                          choices=("whole_image", "lung_masked"))
    findings.add_argument("--lung-model", default="lung_seg", help="lungs for masking")
    findings.add_argument("--lung-mask-dilation", type=float, default=None,
                          help="lung mask dilation (fraction of the input size; default: "
                          "the base card's)")
    findings.add_argument("--size", type=int, default=224)
    findings.add_argument("--without", nargs="+", default=[], choices=("kermany",),
                          help="leave a source out of training (leave-one-source-out check)")
    add_training_flags(findings, FINDINGS, max_minutes_help="time cap per input mode")
    findings.set_defaults(handler=run_findings, parser=findings)


def _add_pneumothorax(tasks: SubParsers) -> None:
    ptx = tasks.add_parser("pneumothorax", help="pneumothorax segmentation")
    add_pneumothorax_sources(ptx)
    ptx.add_argument("--init-from", default=None,
                     help="model name or folder whose matching layers start the network "
                     "(e.g. lung_seg)")
    ptx.add_argument("--size", type=int, default=256)
    add_training_flags(ptx, PNEUMOTHORAX)
    augment = ptx.add_argument_group("sampling and augmentation")
    augment.add_argument("--positive-zoom", type=float, default=0.5)
    augment.add_argument("--positive-share", type=float, default=0.5)
    augment.add_argument("--image-weight", type=float, default=None,
                         help="weight of the image-level (multiple-instance) loss; image-level "
                         "labels (--nih-labelled) teach only through it (default: 0.5 with "
                         "--nih-labelled, else 0 = off)")
    augment.add_argument("--detail", type=float, default=1.0,
                         help="blur/sharpen jitter range (0 = off)")
    augment.add_argument("--swap", type=float, default=0.5,
                         help="probability that a drawn image has a lesion region moved in "
                         "or covered, so the image source cannot predict the label (0 = off)")
    rule = ptx.add_argument_group(
        "decision rule", "runtime settings training does not fit: default = the base "
        "card's (the shipped model's), else the engine default")
    rule.add_argument("--min-area-mm2", type=float, default=None)
    rule.add_argument("--min-area-fraction", type=float, default=None)
    rule.add_argument("--thorax-margin-fraction", type=float, default=None)
    rule.add_argument("--thorax-min-inside", type=float, default=None)
    rule.add_argument("--min-component-fraction", type=float, default=None,
                      help="post-processing: drop components below this share of the image")
    ptx.add_argument("--lung-model", default="lung_seg",
                     help="lung model for the thorax gate and the healthy-lung source check "
                     "in the final evaluation ('' to skip)")
    ptx.set_defaults(handler=run_pneumothorax, parser=ptx)


# -------------------------------------------------------------------------- handlers


def run_gate(args: argparse.Namespace) -> int:
    """Train the chest gate; print its refusal and orientation figures."""
    from cxr_core.training.gate import gate_config, train_gate
    from cxr_core.training.report import print_gate_figures

    out = out_folder(args, GATE)
    card = train_gate(data_root=args.data_root, out_dir=out, command=args.command_line,
                      config=gate_config(**config_flags(args)), version=args.version)
    print_gate_figures(card.evaluation)
    print(f"saved {card.identifier} to {out} (cxr models promote {out} ships it)")
    return EXIT_OK


def run_lung(args: argparse.Namespace) -> int:
    """Train (or fine-tune) the lung model; print its test figures."""
    if args.datalist_only and not args.datalist:
        args.parser.error("--datalist-only needs --datalist")
    from cxr_core.training.loop import TrainConfig
    from cxr_core.training.lung import train_lung
    from cxr_core.training.report import print_lung_figures

    out = out_folder(args, LUNG)
    card = train_lung(data_root=args.data_root, out_dir=out, datalists=args.datalist,
                      init_from=args.init_from, size=args.size,
                      config=TrainConfig(**config_flags(args)), version=args.version,
                      command=args.command_line, datalist_only=args.datalist_only)
    print_lung_figures(card.evaluation)
    print(f"saved {card.identifier} to {out} (cxr models promote {out} ships it)")
    return EXIT_OK


def run_findings(args: argparse.Namespace) -> int:
    """Train the findings classifier (one network per input mode); print its figures."""
    if (args.nih_table is None) != (args.nih_images is None):
        args.parser.error("--nih-table and --nih-images go together")
    if (args.chexpert_csv is None) != (args.chexpert_root is None):
        args.parser.error("--chexpert-csv and --chexpert-root go together")
    from cxr_core.training.findings import classifier_config, train_findings
    from cxr_core.training.findings_data import nih_table_samples
    from cxr_core.training.findings_layouts import chexpert_samples, datalist_samples
    from cxr_core.training.report import print_findings_figures

    extra = nih_table_samples(args.nih_table, args.nih_images) if args.nih_table else []
    if args.chexpert_csv:
        extra += chexpert_samples(args.chexpert_csv, args.chexpert_root)
    if args.datalist:
        extra += datalist_samples(args.datalist)
    sources = [str(p) for p in (args.nih_table, args.chexpert_csv, args.datalist) if p]
    out = out_folder(args, FINDINGS)
    card = train_findings(data_root=args.data_root, out_dir=out, command=args.command_line,
                          modes=args.inputs, size=args.size,
                          config=classifier_config(**config_flags(args)),
                          lung_model=args.lung_model, dilation=args.lung_mask_dilation,
                          extra=extra, extra_source=", ".join(sources) if extra else None,
                          version=args.version, without=args.without)
    for mode, figures in card.evaluation["input_modes"].items():
        print(f"{mode:<12} val mean AUC {figures['val_mean_auc']:.4f} "
              f"({figures['epochs_run']} epochs)")
    print_findings_figures(card.evaluation["test"])
    for limit in card.description.limitations:
        print(f"- {limit}")
    print(f"shipped input mode {card.evaluation['input']}; saved {card.identifier} to {out} "
          f"(evaluation in {out / 'evaluation'}; cxr models promote {out} ships it)")
    return EXIT_OK


def _image_weight(args: argparse.Namespace) -> float:
    """``--image-weight``, defaulting on with ``--nih-labelled`` (its labels have no masks:
    only the image-level term can learn from them)."""
    if args.image_weight is None:
        return 0.5 if args.nih_labelled else 0.0
    if args.nih_labelled and args.image_weight <= 0:
        args.parser.error("--nih-labelled needs --image-weight > 0: its images have no "
                          "masks, only the image-level term learns from them")
    return float(args.image_weight)


def run_pneumothorax(args: argparse.Namespace) -> int:
    """Train the pneumothorax model; print its figures and source check."""
    from cxr_core.training.pneumothorax import PtxTrainOptions, ptx_config, train_pneumothorax
    from cxr_core.training.report import print_pneumothorax_figures

    options = PtxTrainOptions(
        size=args.size, init_from=args.init_from, positive_zoom=args.positive_zoom,
        positive_share=args.positive_share, detail=args.detail, swap=args.swap,
        image_weight=_image_weight(args),
        min_area_mm2=args.min_area_mm2, min_area_fraction=args.min_area_fraction,
        thorax_margin_fraction=args.thorax_margin_fraction,
        thorax_min_inside=args.thorax_min_inside,
        min_component_fraction=args.min_component_fraction, version=args.version,
        lung_model=args.lung_model or None)
    out = out_folder(args, PNEUMOTHORAX)
    card = train_pneumothorax(sources=pneumothorax_sources(args), out_dir=out,
                              command=args.command_line, config=ptx_config(**config_flags(args)),
                              options=options)
    print_pneumothorax_figures(card.evaluation)
    print(f"saved {card.identifier} to {out} (cxr models promote {out} ships it)")
    return EXIT_OK
