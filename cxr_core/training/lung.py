"""``cxr train lung`` / ``cxr evaluate lung``: right lung, left lung, heart/mediastinum."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cxr_core.io import read_radiograph
from cxr_core.models import (
    ModelCard,
    NetworkSpec,
    PostProcess,
    RuntimeSettings,
    build_network,
    load_model,
    save_model,
)
from cxr_core.padding import condition, paste
from cxr_core.segmentation import Segmenter
from cxr_core.terminology import SEGMENT_TYPES
from cxr_core.training.data import (
    LUNG_STRUCTURES,
    SegSample,
    datalist_samples,
    load_tensors,
    sample_targets,
    shared_lung_samples,
)
from cxr_core.training.loop import TrainConfig, train
from cxr_core.training.metrics import dice_iou
from cxr_core.training.plots import plot_curves, save_montage
from cxr_core.training.provenance import (
    base_card,
    carried_description,
    dataset_sources,
    make_provenance,
    next_version,
    runtime_settings,
)
from cxr_core.training.quality_eval import quality_figures
from cxr_core.writers.labelstore import LabelStore
from cxr_core.writers.overlay import overlay_rgb

log = logging.getLogger(__name__)

MODEL_NAME = "lung_seg"
LUNG_NETWORK: dict[str, Any] = {
    "spatial_dims": 2, "in_channels": 1, "out_channels": len(LUNG_STRUCTURES),
    "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 1,
}
DATASETS = ("covid_cxr_v7lungs", "covid_cxr_gb_lr_lungs")
DEFAULT_RUNTIME = RuntimeSettings(postprocess=PostProcess(method="largest_component"))
SELECTION = ("covid_cxr_v7lungs rows with usable_for_lung_seg; the 64 images also in "
             "covid_cxr_gb_lr_lungs use the GB masks (left/right/heart); V7 both-lung masks "
             "are split into right/left by connected component position; heart loss only "
             "where a heart mask exists")


def lung_samples(data_root: Path, datalists: Sequence[Path] = (),
                 datalist_only: bool = False) -> list[SegSample]:
    """Shared samples plus the datalists'; with ``datalist_only`` the shared training
    split is left out (its val split still picks the checkpoint, its test split scores).

    Raises
    ------
    ValueError
        ``datalist_only`` without a datalist.
    """
    samples = shared_lung_samples(data_root)
    if datalist_only:
        if not datalists:
            raise ValueError("datalist_only: needs a datalist")
        samples = [s for s in samples if s.split != "train"]
    for datalist in datalists:
        samples += datalist_samples(datalist, LUNG_STRUCTURES)
    return samples


def train_lung(
    *, data_root: Path, out_dir: Path, command: str, config: TrainConfig,
    datalists: Sequence[Path] = (), init_from: str | Path | None = None, size: int = 256,
    version: str | None = None, datalist_only: bool = False,
) -> ModelCard:
    """Train (or fine-tune ``init_from``), evaluate on the test split, save weights, card
    and history into ``out_dir``.

    The card's description and post-processing come from the base card
    (:func:`~cxr_core.training.provenance.base_card`). With datalists and ``init_from``,
    the card also gets Dice on the datalists' training images before (the parent model)
    and after (the new one): did the corrections teach the model what the readers changed?
    """
    samples = lung_samples(data_root, datalists, datalist_only)
    by_split = {s: [x for x in samples if x.split == s] for s in ("train", "val", "test")}
    log.info("samples: %s", {k: len(v) for k, v in by_split.items()})
    grid = (size, size)
    train_set = load_tensors(by_split["train"], LUNG_STRUCTURES, grid)
    val_set = load_tensors(by_split["val"], LUNG_STRUCTURES, grid)
    base = base_card(MODEL_NAME, init_from)
    sources = {str(d) for d in datalists}
    corrected = [s for s in by_split["train"] if s.source in sources]
    before: dict[str, Any] | None = None
    held_out_before: dict[str, Any] | None = None
    network: torch.nn.Module
    if init_from is not None:
        network, parent_card = load_model(init_from)
        if corrected:
            before = evaluate_lung(Segmenter(network, parent_card), corrected, out_dir,
                                   montage_count=0)
        # the parent on the same held-out images the new model is scored on
        held_out_before = evaluate_lung(Segmenter(network, parent_card), by_split["test"],
                                        out_dir, montage_count=0)
        network.train()
        kwargs, parent = parent_card.network.kwargs, parent_card.identifier
    else:
        kwargs, parent = LUNG_NETWORK, None
        network = build_network("UNet", kwargs)
    started = time.monotonic()
    network, history = train(network, train_set, val_set, config)
    card = ModelCard(
        name=MODEL_NAME, version=next_version(base, version), task="segmentation",
        network=NetworkSpec(architecture="UNet", kwargs=kwargs, input_size=grid),
        labels=list(LUNG_STRUCTURES),
        provenance=make_provenance(
            command=command, parent_model=parent,
            datasets=dataset_sources(data_root, DATASETS)
            + [f"datalist: {d} (user labels)" for d in datalists],
            counts={k: len(v) for k, v in by_split.items()}, selection=SELECTION,
            seed=config.seed, minutes=(time.monotonic() - started) / 60,
            epochs_run=len(history),
            details={"batch_size": config.batch_size, "learning_rate": config.learning_rate,
                     "datalist_only": datalist_only,
                     **({"corrections": corrections_used(datalists)} if datalists else {})}),
        description=carried_description(base, MODEL_NAME, "segmentation"),
        runtime=runtime_settings(fitted=RuntimeSettings(), base=base, default=DEFAULT_RUNTIME),
    )
    save_model(network, card, out_dir, history=history)
    plot_curves(history, LUNG_STRUCTURES, out_dir / "training_curves.png")
    card.evaluation = evaluate_lung(Segmenter(network, card), by_split["test"], out_dir)
    if before is not None:
        after = evaluate_lung(Segmenter(network, card), corrected, out_dir, montage_count=0)
        card.evaluation["datalist_train"] = {
            "datalists": sorted(sources), "parent_model": parent, "n_images": len(corrected),
            "before": before["per_structure"], "after": after["per_structure"]}
    if held_out_before is not None:
        card.evaluation["held_out_vs_parent"] = held_out_comparison(
            parent, held_out_before, card.evaluation)
    card.evaluation["evaluated_by"] = "cxr train lung (test split, after training)"
    save_model(network, card, out_dir, history=history)
    return card


def corrections_used(datalists: Sequence[Path]) -> list[dict[str, Any]]:
    """Which corrections a fine-tune learnt from: per label store entry, its id, who
    exported it and when, the model it corrected and the segments edited (a datalist
    outside a label store gives its entries' ids only)."""
    used: list[dict[str, Any]] = []
    for datalist in datalists:
        entries = LabelStore(Path(datalist).parent).entries()
        if entries:
            used += [{"id": e.key, "split": e.split, "exported_by": e.exported_by,
                      "exported_at": e.exported_at, "corrected_model": e.model,
                      "edited": sorted(e.edited)} for e in entries]
        else:
            used += [{"id": s.key, "split": s.split}
                     for s in datalist_samples(Path(datalist), LUNG_STRUCTURES)]
    return used


def held_out_comparison(parent: str | None, before: dict[str, Any],
                        after: dict[str, Any]) -> dict[str, Any]:
    """Parent and new model on the same held-out (test) images: Dice per structure,
    before and after."""
    keep = ("right_lung", "left_lung", "heart", "both_lungs")
    return {"parent_model": parent, "split": before.get("split"),
            "n_images": before.get("n_images"),
            "before": {k: v for k, v in before["per_structure"].items() if k in keep},
            "after": {k: v for k, v in after["per_structure"].items() if k in keep}}


def evaluate_lung(segmenter: Segmenter, samples: Sequence[SegSample], out_dir: Path,
                  montage_count: int = 6) -> dict[str, Any]:
    """Dice/IoU per structure and for both lungs together, at the mask's resolution;
    a montage of the first ``montage_count`` images in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scores: dict[str, list[tuple[float, float]]] = {}
    quality_rows: list[dict[str, dict[str, float]]] = []
    montage_rows: list[list[np.ndarray]] = []
    montage_labels: list[str] = []
    colors = {n: SEGMENT_TYPES[n].rgb for n in LUNG_STRUCTURES}
    for sample in tqdm(samples, desc="evaluating", unit="image"):
        image = read_radiograph(sample.image).pixels
        conditioned, box = condition(image)  # as the engine runs it
        output = segmenter(conditioned)
        predicted = {name: paste(mask, box, image.shape) for name, mask in output.masks.items()}
        truth = sample_targets(sample, LUNG_STRUCTURES)
        for name, mask in truth.items():
            scores.setdefault(name, []).append(dice_iou(predicted[name], mask))
        quality_rows.append({name: {"quality": output.agreement[name],
                                    "dice": scores[name][-1][0]} for name in truth})
        if "right_lung" in truth and "left_lung" in truth:
            both_truth = truth["right_lung"] | truth["left_lung"]
            both_pred = predicted["right_lung"] | predicted["left_lung"]
            scores.setdefault("both_lungs", []).append(dice_iou(both_pred, both_truth))
            scores.setdefault(f"both_lungs vs {sample.source}", []).append(scores["both_lungs"][-1])
        if len(montage_rows) < montage_count:
            montage_rows.append([
                image, overlay_rgb(np.zeros_like(image), truth, colors, alpha=1.0),
                overlay_rgb(np.zeros_like(image), predicted, colors, alpha=1.0),
                overlay_rgb(image, predicted, colors)])
            montage_labels.append(sample.key)
    if montage_rows:
        save_montage(montage_rows, ["image", "truth", "prediction", "overlay"],
                     out_dir / "montage.png", montage_labels)
    return {
        "split": samples[0].split if samples else "", "n_images": len(samples),
        "resolution": "dataset masks (longest side 512)",
        "postprocess": "largest component per structure, holes filled",
        "per_structure": {
            name: {"n": len(v), "dice_mean": round(float(np.mean([d for d, _ in v])), 4),
                   "dice_median": round(float(np.median([d for d, _ in v])), 4),
                   "iou_mean": round(float(np.mean([i for _, i in v])), 4)}
            for name, v in scores.items()
        },
        "mask_quality": quality_figures(quality_rows) if len(quality_rows) >= 3 else {},
    }
