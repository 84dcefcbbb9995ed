"""A hospital adapting the lung model to its own style, through the label store.

Simulation (issue 16, item 3):

1. *Base*: the lung model trained without ``covid_cxr_gb_lr_lungs`` (V7 images whose
   source is not in the General Blockchain set; V7 val picks the checkpoint).
2. *Corrections*: N = 10, 20, 40 General Blockchain **train** images, their radiologist
   masks standing in for the reader's corrections, written through the label store
   (final = ground truth, original = the base model's output), picked either by the
   quality estimate (lowest review score under the base model first: review the worst
   first) or at random.
3. *Fine-tune*: ``train_lung(datalists=[store], init_from=base, datalist_only=True)``,
   as ``cxr train lung --datalist ... --datalist-only`` does (the General Blockchain val
   split, 9 images, picks the checkpoint: the hospital's own small validation set).
4. *Score*: both-lung Dice on the 15 General Blockchain **test** images, never seen by
   any model here, with bootstrap 95 % intervals of the mean and of the paired gain over
   the base.

Runs are bounded (``--size``, epochs and minutes); the defaults fit a busy 2-core CPU.

    python benchmarks/adaptation.py --work runs/adaptation --out runs/adaptation.json

About 25 minutes on a busy 2-core CPU (base 7 min, each fine-tune 1-2 min); results in
``docs/adaptation.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_core.io import read_radiograph  # noqa: E402
from cxr_core.padding import condition, paste  # noqa: E402
from cxr_core.segmentation import Segmenter  # noqa: E402
from cxr_core.training.data import (  # noqa: E402
    LUNG_STRUCTURES,
    SegSample,
    read_manifest,
    sample_targets,
    shared_lung_samples,
)
from cxr_core.training.loop import TrainConfig  # noqa: E402
from cxr_core.training.lung import train_lung  # noqa: E402
from cxr_core.training.metrics import dice_iou  # noqa: E402
from cxr_core.writers.labelstore import LabelStore, image_key  # noqa: E402

GB, V7 = "covid_cxr_gb_lr_lungs", "covid_cxr_v7lungs"
BOOTSTRAP = 2000
log = logging.getLogger("adaptation")


# ------------------------------------------------------------------------ data roots
def _write_root(root: Path, data_root: Path, keep: dict[str, Any]) -> Path:
    """The shared layout under ``root``: links to the image and mask folders, manifests
    cut to the rows ``keep[dataset](row)`` accepts."""
    for dataset, accept in keep.items():
        source, target = data_root / dataset, root / dataset
        target.mkdir(parents=True, exist_ok=True)
        for name in ("images", "masks", "SOURCE.md"):
            if not (target / name).exists():
                (target / name).symlink_to(source / name)
        rows = read_manifest(source)
        with (target / "manifest.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(r for r in rows if accept(r))
    return root


def simulation_roots(work: Path, data_root: Path) -> tuple[Path, Path]:
    """(base root, fine-tune root): the base never sees a General Blockchain image
    (nor the V7 copy of one); fine-tunes see GB val (checkpoint) and GB test (score)."""
    gb_sources = {row["source_id"] for row in read_manifest(data_root / GB)}
    base = _write_root(work / "data_base", data_root, {
        V7: lambda r: r["source_id"] not in gb_sources and r["split"] in ("train", "val"),
        GB: lambda r: r["split"] == "test"})
    tune = _write_root(work / "data_tune", data_root, {
        V7: lambda r: False, GB: lambda r: r["split"] in ("val", "test")})
    return base, tune


# ------------------------------------------------------------------------- scoring
def test_dice(segmenter: Segmenter, samples: Sequence[SegSample]) -> dict[str, np.ndarray]:
    """Per image, Dice of both lungs together and of the heart against the dataset's
    masks (images without a heart mask count for the lungs only)."""
    lungs, heart = [], []
    for sample in samples:
        image = read_radiograph(sample.image).pixels
        conditioned, box = condition(image)
        masks = {n: paste(m, box, image.shape) for n, m in segmenter(conditioned).masks.items()}
        truth = sample_targets(sample, LUNG_STRUCTURES)
        lungs.append(dice_iou(masks["right_lung"] | masks["left_lung"],
                              truth["right_lung"] | truth["left_lung"])[0])
        heart.append(dice_iou(masks["heart"], truth["heart"])[0] if "heart" in truth
                     else np.nan)
    return {"both_lungs": np.array(lungs), "heart": np.array(heart)}


def figures(dice: dict[str, np.ndarray], base: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """Mean Dice with CIs per structure, and the paired gain over ``base``."""
    result: dict[str, Any] = {}
    for name, values in dice.items():
        known = ~np.isnan(values)
        result[name] = mean_ci(values[known])
        if base is not None:
            result[name]["gain"] = mean_ci(values[known] - base[name][known])
    return result


def mean_ci(values: np.ndarray, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    draws = rng.choice(values, size=(BOOTSTRAP, values.size)).mean(axis=1)
    return {"mean": round(float(values.mean()), 4),
            "ci95": [round(float(q), 4) for q in np.percentile(draws, (2.5, 97.5))]}


def review_scores(segmenter: Segmenter, samples: Sequence[SegSample]) -> dict[str, float]:
    """Each sample's review score under ``segmenter``: its worst lung's mask agreement."""
    scores = {}
    for sample in samples:
        conditioned, _ = condition(read_radiograph(sample.image).pixels)
        agreement = segmenter(conditioned).agreement
        scores[sample.key] = min(agreement["right_lung"], agreement["left_lung"])
    return scores


# --------------------------------------------------------------------- label store
def fill_store(store: Path, samples: Sequence[SegSample], base: Segmenter) -> Path:
    """The reader's session: each sample exported with its ground truth as the
    correction of the base model's output; returns the datalist."""
    labels = LabelStore(store)
    for sample in samples:
        radiograph = read_radiograph(sample.image)
        conditioned, box = condition(radiograph.pixels)
        original = {n: paste(m, box, radiograph.shape)
                    for n, m in base(conditioned).masks.items()}
        labels.write(key=image_key(pixels=radiograph.pixels), pixels=radiograph.pixels,
                     final_masks=sample_targets(sample, LUNG_STRUCTURES),
                     original_masks=original,
                     metadata={"source_name": sample.key, "exported_by": "simulation",
                               "model": base.card.identifier,
                               "model_sha256": base.card.weights_sha256[:16]})
    return labels.datalist_path


# ---------------------------------------------------------------------------- runs
def train_base(root: Path, out: Path, args: argparse.Namespace) -> Path:
    if (out / "model.json").is_file():
        return out
    config = TrainConfig(epochs=args.base_epochs, patience=args.base_epochs,
                         max_minutes=args.base_minutes, label="base")
    train_lung(data_root=root, out_dir=out, command="cxr train lung (adaptation base)",
               config=config, size=args.size, version="0.1.0")
    return out


def fine_tune(base_dir: Path, datalist: Path, root: Path, out: Path,
              args: argparse.Namespace, version: str) -> Path:
    if (out / "model.json").is_file():
        return out
    config = TrainConfig(epochs=args.tune_epochs, patience=args.tune_epochs,
                         learning_rate=args.tune_lr, max_minutes=args.tune_minutes,
                         batch_size=4, label=out.name)
    train_lung(data_root=root, out_dir=out, command="cxr train lung (adaptation fine-tune)",
               config=config, datalists=[datalist], init_from=base_dir, size=args.size,
               version=version, datalist_only=True)
    return out


def picks(pool: Sequence[SegSample], scores: dict[str, float], n: int,
          strategy: str) -> list[SegSample]:
    """``n`` samples of ``pool``: the lowest review scores first, or a seeded draw."""
    if strategy == "quality":
        return sorted(pool, key=lambda s: scores[s.key])[:n]
    seed = int(strategy.removeprefix("random"))
    return random.Random(seed).sample(list(pool), n)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    base_root, tune_root = simulation_roots(work, Path(args.data_root))
    samples = shared_lung_samples(Path(args.data_root))
    pool = [s for s in samples if s.source == GB and s.split == "train"
            and {"right_lung", "left_lung"} <= set(s.masks)]
    # both lungs outlined (one GB test image has no left lung mask)
    test = [s for s in samples if s.source == GB and s.split == "test"
            and {"right_lung", "left_lung"} <= set(s.masks)]
    started = time.monotonic()
    base_dir = train_base(base_root, work / "base", args)
    base = Segmenter.load(base_dir)
    base_dice = test_dice(base, test)
    scores = review_scores(base, pool)
    results: dict[str, Any] = {
        "size": args.size, "n_test": len(test), "pool": len(pool),
        "base": {"model": base.card.identifier, **figures(base_dice, None),
                 "minutes": base.card.provenance.minutes}, "runs": []}
    for n in args.n:
        for strategy in ["quality", *(f"random{seed}" for seed in args.random_seeds)]:
            chosen = picks(pool, scores, n, strategy)
            name = f"n{n}_{strategy}"
            datalist = fill_store(work / "stores" / name, chosen, base)
            tuned_dir = fine_tune(base_dir, datalist, tune_root, work / name, args,
                                  version=f"0.2.{n}")
            dice = test_dice(Segmenter.load(tuned_dir), test)
            results["runs"].append({
                "n": n, "strategy": strategy, **figures(dice, base_dice),
                "picked_mean_review_score": round(float(np.mean(
                    [scores[s.key] for s in chosen])), 4)})
            log.info("%s: %s", name, results["runs"][-1])
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    results["minutes"] = round((time.monotonic() - started) / 60, 1)
    return results


def _cell(entry: dict[str, Any], signed: bool = False) -> str:
    sign = "+" if signed else ""
    low, high = entry["ci95"]
    return f"{entry['mean']:{sign}.4f} ({low:{sign}.4f} to {high:{sign}.4f})"


def table(results: dict[str, Any]) -> str:
    """A markdown table of the results."""
    base = results["base"]
    lines = [f"Base ({base['model']}, no GB image, {results['size']} px), GB test "
             f"(n={results['n_test']}): both lungs {_cell(base['both_lungs'])}, heart "
             f"{_cell(base['heart'])}", "",
             "| N | picked by | both lungs Dice (95% CI) | gain over base | heart Dice | "
             "heart gain |", "|---|---|---|---|---|---|"]
    for r in results["runs"]:
        lungs, heart = r["both_lungs"], r["heart"]
        lines.append(f"| {r['n']} | {r['strategy']} | {_cell(lungs)} | "
                     f"{_cell(lungs['gain'], True)} | {_cell(heart)} | "
                     f"{_cell(heart['gain'], True)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="results JSON")
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--random-seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--base-epochs", type=int, default=30)
    parser.add_argument("--base-minutes", type=float, default=12.0)
    parser.add_argument("--tune-epochs", type=int, default=60)
    parser.add_argument("--tune-minutes", type=float, default=4.0)
    # 5e-4 (Slicer's former retrain default) for 25 epochs left the base unchanged here
    # (gains within +-0.002 at N=10): too few steps on 10-40 images to move it
    parser.add_argument("--tune-lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = run(args)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
