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
    if "nih_transfer" in check:
        parts.append(_transfer_sentence(check["nih_transfer"]["pooled"],
                                        "every unseen NIH image labelled Pneumothorax"))
        parts.append(_transfer_sentence(check["nih_transfer"]["multilabel"],
                                        "the NIH multilabel set alone (normals PA too, so "
                                        "the view cannot pass for the finding)"))
    if "size_check" in metrics:
        parts.append(_size_sentence(metrics["size_check"]))
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
    transfer = (check.get("nih_transfer") or {}).get("multilabel", {}).get("auc_vs_normal")
    if transfer and transfer.get("ci95") is not None:
        # the multilabel set decides: its normals are PA like its pneumothoraces, while
        # the other NIH set's normals are mostly AP (view would pass for the finding)
        generalises = transfer["ci95"][0] > 0.5
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


def _transfer_sentence(pooled: dict[str, Any], images: str) -> str:
    """AUC and operating point on unseen NIH images labelled Pneumothorax (``images``
    says which)."""
    sensitivity = pooled["sensitivity"]
    found = round(sensitivity["value"] * sensitivity["n"]) if sensitivity["n"] else 0
    return (f"On {images}, never trained on: "
            + "; ".join(_verdict(what, pooled[name]) for what, name in (
                ("vs NIH 'No Finding' images", "auc_vs_normal"),
                ("vs NIH images with other findings", "auc_vs_other_abnormal")))
            + f"; at the operating point it reports {found} of {sensitivity['n']} "
            f"(sensitivity {sensitivity['value']}), with specificity "
            f"{pooled['specificity_normal']['value']} on the normals and "
            f"{pooled['specificity_other_abnormal']['value']} on the other findings.")


def _size_sentence(size: dict[str, Any]) -> str:
    """The % of hemithorax against the SIIM masks, on the test positives."""
    test = size["test"]
    engine, formula = test["engine"], test["formula_on_truth"]
    if not engine["n_reported"]:
        return "The % of hemithorax could not be checked: no test positive was reported."
    signed, absolute = engine["signed_error"], engine["absolute_error"]
    return (f"% of hemithorax against the SIIM masks on the {test['n']} test positives: "
            f"reported on {engine['n_reported']}, error {signed['mean']:+.1f} points "
            f"[{signed['ci95'][0]:+.1f} to {signed['ci95'][1]:+.1f}], mean absolute "
            f"{absolute['mean']:.1f} [{absolute['ci95'][0]:.1f}-{absolute['ci95'][1]:.1f}], "
            f"within 10 points on {engine['within_10_points']}; on the true masks the "
            f"formula errs by {formula['absolute_error']['mean']:.1f} points (the truth "
            "shares its hemithorax)"
            + (", so the error lies in the extent of the predicted region (the segmentation "
               "misses part of large pneumothoraces), not in the hemithorax."
               if formula["absolute_error"]["mean"] <= 2 < absolute["mean"] else "."))
