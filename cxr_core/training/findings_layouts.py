"""The public layouts a site brings to ``cxr train findings``: CheXpert's CSV and a MONAI
datalist (an NIH ``Data_Entry`` CSV is read by
:func:`cxr_core.training.findings_data.nih_table_samples`).

Each becomes :class:`~cxr_core.training.findings_data.FindingsSample` rows with our label
names; a label a layout does not carry is unknown for its images (masked in the loss),
never a negative.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from cxr_core.training.findings_data import LABELS, FindingsSample

CHEXPERT_LABELS: dict[str, str] = {
    "Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation", "Edema": "edema", "Pleural Effusion": "effusion",
    "Pneumonia": "pneumonia", "Pneumothorax": "pneumothorax",
}
"""CheXpert columns with an NIH counterpart; the others (Lung Opacity, Support Devices...)
have none among our labels."""
FRONTAL = "Frontal"


def chexpert_samples(table: Path, root: Path, split: str = "train") -> list[FindingsSample]:
    """CheXpert's ``train.csv`` / ``valid.csv``: frontal images only; 1 positive, 0
    negative, -1 (uncertain) and blank unknown; ``abnormal`` from ``No Finding``. Paths in
    the CSV are relative to ``root``'s parent (as CheXpert ships them) or to ``root``.

    Raises
    ------
    ValueError
        When the CSV lacks CheXpert's ``Path`` or ``No Finding`` column.
    """
    samples = []
    with Path(table).open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"Path", "No Finding"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"table: not a CheXpert CSV (no {', '.join(sorted(missing))} "
                             "column)")
        for row in reader:
            if row.get("Frontal/Lateral", FRONTAL) != FRONTAL:
                continue
            image = _existing(row["Path"], root)
            if image is None:
                continue
            labels = {ours: float(row[theirs]) for theirs, ours in CHEXPERT_LABELS.items()
                      if row.get(theirs, "").strip() in ("0", "0.0", "1", "1.0")}
            if row["No Finding"].strip() in ("1", "1.0"):
                labels["abnormal"] = 0.0
            elif any(labels.values()):
                labels["abnormal"] = 1.0
            samples.append(FindingsSample(image=image, labels=labels, split=split,
                                          view=row.get("AP/PA", ""), source="chexpert"))
    return samples


def datalist_samples(path: Path, key: str = "training",
                     split: str = "train") -> list[FindingsSample]:
    """A MONAI datalist (``{"training": [{"image": ..., "label": ...}]}``). ``label`` is
    either a list of 0/1 in :data:`LABELS` order or a mapping of our label names to 0/1;
    image paths are relative to the datalist's folder.

    Raises
    ------
    ValueError
        For a missing ``key``, a label list of the wrong length or an unknown label name.
    """
    document = json.loads(Path(path).read_text())
    if key not in document:
        raise ValueError(f"key: the datalist has no {key!r} list (has {sorted(document)})")
    samples = []
    for entry in document[key]:
        labels = entry["label"]
        if isinstance(labels, list):
            if len(labels) != len(LABELS):
                raise ValueError(f"label: expected {len(LABELS)} values in {LABELS} order, "
                                 f"got {len(labels)}")
            labels = dict(zip(LABELS, labels, strict=True))
        unknown = set(labels) - set(LABELS)
        if unknown:
            raise ValueError(f"label: unknown names {sorted(unknown)}; known: {LABELS}")
        samples.append(FindingsSample(image=Path(path).parent / entry["image"],
                                      labels={k: float(v) for k, v in labels.items()},
                                      split=entry.get("split", split),
                                      view=entry.get("view", ""), source="datalist"))
    return samples


def _existing(relative: str, root: Path) -> Path | None:
    for base in (Path(root).parent, Path(root)):
        if (base / relative).is_file():
            return base / relative
    return None
