"""Does the mask agreement rank real errors of the pneumothorax masks?

    python benchmarks/pneumothorax_mask_quality.py [OUT_JSON]

The shipped pneumothorax model runs as the engine runs it (conditioned image, the lung
model's lungs for its thorax gate) on every shared SIIM-ACR positive. For each reported
mask: its mask agreement and its true Dice against the SIIM readers' mask. Figures
(Spearman with a bootstrap 95 % interval, poor masks among the lowest-scored) for the
positives the model was **not** trained on (val + test) and, apart, for the training
positives (optimistic: the model has seen them). The data set is tiny (43 positives in
all); the intervals say how little that settles.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_core.io import read_radiograph  # noqa: E402
from cxr_core.models import default_models_dir  # noqa: E402
from cxr_core.segmentation import Segmenter  # noqa: E402
from cxr_core.stages.pneumothorax import PneumothoraxDetector  # noqa: E402
from cxr_core.training.data import read_manifest, read_mask  # noqa: E402
from cxr_core.training.metrics import dice_iou  # noqa: E402
from cxr_core.training.pneumothorax_evaluate import detect  # noqa: E402
from cxr_core.training.quality_eval import pneumothorax_quality_figures  # noqa: E402

SIIM = REPO.parent / "shared" / "data" / "pneumothorax_siim_github"


def positives() -> list[dict[str, str]]:
    return [row for row in read_manifest(SIIM)
            if row["label_pneumothorax"] == "1"]


def score(detector: PneumothoraxDetector, lung: Segmenter,
          row: dict[str, str]) -> dict[str, object]:
    radiograph = read_radiograph(SIIM / row["image"])
    found, _ = detect(detector, lung, radiograph.pixels, radiograph.spacing)
    truth = read_mask(SIIM / row["mask_pneumothorax"])
    dice = dice_iou(found.mask, truth)[0]
    return {"key": Path(row["image"]).stem, "split": row["split"], "present": found.present,
            "agreement": found.agreement if found.present else None, "dice": round(dice, 4)}


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    models = default_models_dir()
    detector = PneumothoraxDetector.load(models / "pneumothorax")
    lung = Segmenter.load(models / "lung_seg")
    rows = [score(detector, lung, row) for row in positives()]
    figures = {
        "held_out_val_test": pneumothorax_quality_figures(
            [(r["agreement"], r["dice"]) for r in rows if r["split"] != "train"]),
        "train_seen_in_training": pneumothorax_quality_figures(
            [(r["agreement"], r["dice"]) for r in rows if r["split"] == "train"]),
        "model": detector.segmenter.card.identifier,
        "per_image": rows,
    }
    text = json.dumps(figures, indent=2, default=float)
    if out is not None:
        out.write_text(text + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "per_image"}, indent=2,
                     default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
