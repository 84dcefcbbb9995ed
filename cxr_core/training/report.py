"""The figures of a training or evaluation run as the ``cxr`` command prints them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SOURCE_CHECKS = ("auc_siim_vs_nih_negative", "auc_siim_healthy_vs_nih_lung",
                 "auc_siim_style_vs_as_is", "auc_nih_pneumothorax_vs_normal",
                 "auc_nih_pneumothorax_vs_pneumonia")


def print_lung_figures(figures: Mapping[str, Any]) -> None:
    """Dice / IoU per structure (``evaluate_lung``'s result)."""
    print(f"{'structure':<36} {'n':>4} {'Dice':>7} {'median':>7} {'IoU':>7}")
    for name, m in figures["per_structure"].items():
        print(f"{name:<36} {m['n']:>4} {m['dice_mean']:>7.4f} {m['dice_median']:>7.4f} "
              f"{m['iou_mean']:>7.4f}")
    quality = figures.get("mask_quality") or {}
    for name, q in quality.items():
        if isinstance(q, Mapping) and "spearman" in q:
            print(f"mask quality {name:<23} Spearman with Dice {q['spearman']:.3f} "
                  f"(95% CI {q['spearman_ci95'][0]:.3f}-{q['spearman_ci95'][1]:.3f}); "
                  f"Dice<{quality['poor_dice']}: {q['poor_in_lowest_20pct']}/{q['n_poor']} "
                  "in the lowest-scored 20 %")
    if quality.get("images", {}).get("n"):
        images = quality["images"]
        print(f"mask quality per image (worst lung) Spearman "
              f"{images['spearman_with_worst_lung_dice']:.3f} (95% CI "
              f"{images['spearman_ci95'][0]:.3f}-{images['spearman_ci95'][1]:.3f}); poor lung "
              f"masks in the lowest-scored 20 % of images: "
              f"{images['poor_lung_masks_in_lowest_20pct']}/{images['poor_lung_masks']}")


def _with_ci(entry: Mapping[str, Any], key: str) -> str:
    if entry.get(key) is None:
        return "n/a"
    low, high = entry["ci95"]
    return f"{entry[key]:.3f} (95% CI {low:.3f}-{high:.3f})"


def print_pneumothorax_figures(figures: Mapping[str, Any]) -> None:
    """Dice, detection AUC, operating point and the source check
    (``evaluate_pneumothorax``'s result)."""
    print(f"split {figures['split']}: {figures['caveat']}")
    print(f"Dice on positives   n={figures['dice_positive']['n']:<4} "
          f"{_with_ci(figures['dice_positive'], 'mean')}")
    print(f"Kaggle mean Dice    n={figures['kaggle_mean_dice']['n']:<4} "
          f"{_with_ci(figures['kaggle_mean_dice'], 'mean')}")
    print(f"detection AUC       {_with_ci(figures['detection_auc'], 'auc')}")
    print(f"sensitivity {figures['sensitivity']['value']}  "
          f"specificity {figures['specificity']['value']}")
    check = figures["source_check"]
    for name in SOURCE_CHECKS:
        entry = check.get(name)
        if entry is None:
            continue
        print(f"source check {name}: n={entry['n_positive']}/{entry['n_negative']} "
              f"{_with_ci(entry, 'auc')}")
    change = check.get("siim_style_change", {"n": 0})
    if change["n"]:
        print(f"source check SIIM-style re-encoding changes the probability by "
              f"{_with_ci(change, 'mean')} on average, at most {change['max_abs']:.3f}")


def print_findings_figures(figures: Mapping[str, Any]) -> None:
    """AUC, sensitivity and specificity with intervals per label and view
    (``split_figures``' result)."""
    def interval(entry: Mapping[str, Any], key: str) -> str:
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


def print_localisation(localisation: Mapping[str, Any]) -> None:
    """Pointing game, IoU and lung-zone hit rates of the heat maps per group of boxed
    images."""
    for group, figures in localisation.items():
        if isinstance(figures, dict) and figures.get("n"):
            print(f"heat maps on NIH boxes ({group}): pointing game {figures['pointing_game']:.3f}"
                  f" ({figures['hits']}/{figures['n']}), IoU mean {figures['iou_mean']:.3f}")
            zones = figures.get("zones", {})
            for criterion in ("top_zone_centre", "top_zone_overlap", "any_zone_centre",
                              "any_zone_overlap"):
                if criterion in zones:
                    entry = zones[criterion]
                    low, high = entry["ci95"]
                    print(f"  zone hit, {criterion:<17} {entry['hits']}/{zones['n']} "
                          f"{entry['rate']:.3f} ({low:.3f}-{high:.3f})")


def print_gate_figures(figures: Mapping[str, Any]) -> None:
    """Refusal rates per source and orientation detection of the chest gate."""
    def share(entry: Mapping[str, Any]) -> str:
        low, high = entry["ci95"] or (float("nan"), float("nan"))
        return f"{entry['count']:>4}/{entry['n']:<4} {entry['rate']:.3f} ({low:.3f}-{high:.3f})"

    print(f"rules {figures['rules']}")
    print(f"{'source':<34} {'content':<8} {'refused':<28} seen")
    for source, entry in figures["per_source"].items():
        print(f"{source:<34} {entry['content']:<8} {share(entry):<28} "
              f"{'yes' if entry['trained_on_source'] else 'NO'}")
    print(f"false refusal, frontal chests   {share(figures['false_refusal_frontal_chests'])}")
    print(f"refusal, everything else        {share(figures['refusal_not_frontal'])}")
    print(f"refusal, sources never seen     {share(figures['refusal_unseen_sources'])}")
    summary = figures["orientation"]["summary"]
    for name, entry in summary.items():
        print(f"orientation {name:<24} {share(entry)}")
