"""The pneumothorax card's plain statement of its limits, written from its own figures
(training counts, test split, source check) so the words cannot drift from the numbers.
``cxr evaluate pneumothorax --write-card`` and training both store it as
``evaluation["limits"]``."""

from __future__ import annotations

from typing import Any


def limits_statement(counts: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The card's plain statement of training size, test size and the source check,
    written from the figures so it cannot drift from them."""
    train, check = counts.get("train", {}), metrics.get("source_check", {})
    positives = sum(v for k, v in train.items() if k.endswith("_positive"))
    negatives = sum(v for k, v in train.items() if k.endswith("_negative"))
    breakdown = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(train.items()))
    tested = (f"Tested on {metrics['n_positive']} positive and {metrics['n_negative']} "
              "negative images")
    parts = [f"Trained on {positives} images with pneumothorax and {negatives} without "
             f"({breakdown}).",
             tested + (", so every figure has a wide interval." if metrics["n_positive"] < 30
                       else ".")]
    if "auc_siim_vs_nih_negative" in check:
        parts.append(_source_sentence(check))
    parts += _source_reading(check)
    sick, labelled = check.get("nih_unseen_pneumonia"), check.get("nih_labelled_pneumothorax")
    if sick and sick["n"] and labelled and labelled["n"]:
        parts.append(f"On NIH images a region is reported in {labelled['reported_present']} "
                     f"of {labelled['n']} labelled pneumothorax (NIH labels mined "
                     f"from reports, no masks) and in {sick['reported_present']} of {sick['n']} "
                     "unseen pneumonia images without that label.")
    parts.append("Research use only; not for clinical diagnosis. Retrain on local data "
                 "with `cxr train pneumothorax`.")
    return " ".join(parts)


def _source_sentence(check: dict[str, Any]) -> str:
    compared = (
        ("the SIIM negatives vs NIH negatives", "auc_siim_vs_nih_negative"),
        ("healthy lungs of SIIM images vs NIH lungs", "auc_siim_healthy_vs_nih_lung"),
        ("NIH negatives re-encoded the SIIM way vs as they are", "auc_siim_style_vs_as_is"),
        ("NIH images labelled pneumothorax (never trained on) vs NIH 'No Finding' images",
         "auc_nih_pneumothorax_vs_normal"),
    )
    return ("Source check on images never trained on: "
            + "; ".join(_verdict(what, check.get(name, {})) for what, name in compared) + ".")


def _source_reading(check: dict[str, Any]) -> list[str]:
    """What the source checks together say, in words."""
    def above_half(name: str) -> bool | None:
        entry = check.get(name) or {}
        return None if entry.get("ci95") is None else entry["ci95"][0] > 0.5

    pipeline = above_half("auc_siim_style_vs_as_is")
    generalises = above_half("auc_nih_pneumothorax_vs_normal")
    healthy = above_half("auc_siim_healthy_vs_nih_lung")
    reading = []
    if pipeline:
        reading.append("The SIIM encoding pipeline alone raises the score: the model has "
                       "learned the image source.")
    if generalises is False:
        reading.append("Pneumothorax on NIH images is not found better than chance: the "
                       "figures may measure the image source, not the finding.")
    if healthy and not pipeline and generalises:
        siim, nih = check["siim_healthy_lung"], check["nih_lung"]
        lungs = (f"{siim['reported_present']} of {siim['n']} vs "
                 f"{nih['reported_present']} of {nih['n']}")
        more = siim["reported_present"] / siim["n"] > nih["reported_present"] / nih["n"]
        reading.append(
            "The encoding pipeline alone changes nothing and pneumothorax is found on NIH "
            "images too, so the source is not the model's shortcut; but lungs without "
            "pneumothorax in SIIM images still score higher than NIH lungs, which these "
            "data cannot separate from the patients (drains, subcutaneous air, operated "
            "chests). " + (
                f"At the operating point a region is reported in {lungs} lungs: expect "
                "more false positives in a pneumothorax population than the specificity "
                "on NIH negatives suggests." if more else
                f"The difference stays below the operating point: a region is reported in "
                f"{lungs} lungs."))
    elif healthy:
        reading.append("Lungs without pneumothorax in SIIM images score higher than NIH "
                       "lungs.")
    return reading


def _verdict(what: str, entry: dict[str, Any]) -> str:
    if entry.get("auc") is None:
        return f"{what}: not measured"
    low, high = entry["ci95"]
    reading = ("scored alike (the interval holds 0.5)" if low <= 0.5 <= high else
               "the first scored higher" if low > 0.5 else "the first scored lower")
    if min(entry["n_positive"], entry["n_negative"]) < 5:
        reading += ", too few images to decide"
    return (f"{what}: AUC {entry['auc']:.2f} [{low:.2f}-{high:.2f}], "
            f"n={entry['n_positive']}/{entry['n_negative']}, {reading}")
