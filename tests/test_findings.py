"""The shipped findings model on the real NIH images, its calibration and operating points,
its heat maps, and its findings in every writer (JSON, heat-map PNGs, overlay, SR)."""
# Labels come from the shipped card: the classifier ships the labels the data supports.

from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pytest
from PIL import Image

from cxr_core.io import read_radiograph
from cxr_core.segmentation import Segmenter
from cxr_core.stages.findings import LUNG_MASKED, WHOLE_IMAGE, FindingsClassifier, FindingsInput
from cxr_core.terminology import FINDING_CODES
from cxr_core.training.calibration import fit_platt, threshold_for_sensitivity
from cxr_core.training.findings import youden_threshold
from cxr_core.training.findings_data import (
    nih_findings_samples,
    nih_labels,
    nih_multilabel_samples,
    parse_boxes,
)
from cxr_core.training.findings_evaluate import predict_samples
from cxr_core.training.metrics import roc_auc, sensitivity_specificity
from cxr_core.writers.files import write_outputs
from cxr_core.writers.outputs import OUTPUT_KINDS
from tests.conftest import RG1_UNCR, dciodvfy_errors, dsrdump

AUC_MARGIN = 0.02  # the card's figure was computed by the same code; allow numeric drift


@pytest.fixture(scope="module")
def classifier() -> FindingsClassifier:
    return FindingsClassifier.load()


@pytest.fixture(scope="module")
def labels(classifier) -> list[str]:
    return list(classifier.card.labels)


@pytest.fixture(scope="module")
def segmenter(classifier) -> Segmenter | None:
    return Segmenter.load("lung_seg") if classifier.lung_masked else None


@pytest.fixture(scope="module")
def predictions(classifier, segmenter, shared_data, labels) -> dict[str, tuple]:
    """``split -> (targets, probabilities, views)`` for the NIH val and test splits (both
    full-resolution NIH sets), from the images."""
    samples = nih_findings_samples(shared_data) + nih_multilabel_samples(shared_data)
    results = {}
    for split in ("val", "test"):
        chosen = [s for s in samples if s.split == split]
        predicted = predict_samples(classifier, segmenter, chosen, lambda s: False)
        results[split] = (
            np.array([[p.sample.labels[label] for label in labels] for p in predicted]),
            np.stack([p.probabilities for p in predicted]),
            np.array([p.sample.view for p in predicted]))
    return results


def test_test_split_auc_is_at_least_the_card_figure(classifier, predictions, labels) -> None:
    targets, probabilities, views = predictions["test"]
    figures = classifier.card.evaluation["test"]
    for index, label in enumerate(labels):
        for view in ("all", "AP", "PA"):
            if view not in figures[label] or not figures[label][view]["n_positive"]:
                continue  # no positive of this label in this view: no AUC to hold
            inside = np.ones(len(views), bool) if view == "all" else views == view
            auc = roc_auc(targets[inside, index] > 0.5, probabilities[inside, index])
            assert auc >= figures[label][view]["auc"] - AUC_MARGIN, (label, view, auc)


def test_the_view_is_not_the_models_shortcut(predictions, labels) -> None:
    """NIH's normals are mostly AP and its abnormal images mostly PA, so "PA -> abnormal"
    scores well on NIH and fails elsewhere. Among the test normals, the model must not
    rank PA images above AP ones (it does not learn the view); within PA, where NIH's
    abnormal images are, it must still rank abnormal above normal."""
    targets, probabilities, views = predictions["test"]
    index = labels.index("abnormal")
    truth = targets[:, index] > 0.5
    normals = ~truth
    assert roc_auc(views[normals] == "PA", probabilities[normals, index]) <= 0.6
    inside = views == "PA"
    assert roc_auc(truth[inside], probabilities[inside, index]) > 0.7


def test_card_thresholds_follow_their_rules_on_val(classifier, predictions, labels) -> None:
    """``abnormal`` keeps val sensitivity >= 0.9 (triage); every other label sits at the
    val threshold with the best Youden index."""
    targets, probabilities, _ = predictions["val"]
    rules = classifier.card.runtime.classifier
    assert rules is not None
    for index, label in enumerate(labels):
        truth = targets[:, index] > 0.5
        threshold = rules.thresholds[label]
        if label == "abnormal":  # one positive of slack: the engine path differs in ulps
            sensitivity, _ = sensitivity_specificity(truth, probabilities[:, index], threshold)
            assert sensitivity >= 0.90 - 1 / truth.sum() - 1e-6
        else:  # the best Youden index, within one positive (the card rounds thresholds)
            best = youden_threshold(truth, probabilities[:, index])
            assert _youden(truth, probabilities[:, index], threshold) >= _youden(
                truth, probabilities[:, index], best) - 1.01 / truth.sum(), label


def _youden(truth: np.ndarray, probabilities: np.ndarray, threshold: float) -> float:
    sensitivity, specificity = sensitivity_specificity(truth, probabilities, threshold)
    return sensitivity + specificity - 1


def test_engine_findings_reach_json_heatmaps_overlay_and_sr(engine, labels, tmp_path) -> None:
    analysis = engine.analyze(read_radiograph(RG1_UNCR))
    by_name = {f.name: f for f in analysis.findings if f.name in labels}
    assert set(by_name) == set(labels)  # other stages may add their own findings
    for name, finding in by_name.items():
        assert finding.code == FINDING_CODES[name]
        assert 0.0 <= finding.probability <= 1.0
        assert finding.positive == (finding.probability >= finding.threshold)
        assert (finding.heatmap is not None) == finding.positive
    outputs = write_outputs(analysis, tmp_path, OUTPUT_KINDS)  # heat maps when asked
    listed = [f for f in json.loads(outputs.files["json"].read_text())["findings"]
              if f["name"] in labels]
    assert len(listed) == len(labels)
    for item in listed:
        assert set(item) >= {"name", "code", "probability", "threshold", "positive"}
        heatmap_path = outputs.folder / "heatmaps" / f"{item['name']}.png"
        assert heatmap_path.is_file() == item["positive"]
        if item["positive"]:
            assert Image.open(heatmap_path).size[::-1] == analysis.radiograph.shape
    sr_path = outputs.files["sr"]
    assert dciodvfy_errors(sr_path) == []
    dump = dsrdump(sr_path)
    for code in (FINDING_CODES[label] for label in labels):
        assert code.value in dump and code.meaning in dump
    sr = hd.sr.srread(sr_path)
    groups = sr.content.get_image_measurement_groups()
    finding_types = {g.finding_type.value: g for g in groups if g.finding_type is not None}
    for name, finding in by_name.items():
        group = finding_types[FINDING_CODES[name].value]
        evaluation = group.get_qualitative_evaluations()[0]
        assert evaluation.value.value == ("52101004" if finding.positive else "272519000")
        probability = group.get_measurements()[0]
        assert probability.value == pytest.approx(finding.probability, abs=1e-4)


def test_heatmaps_are_at_source_resolution(classifier, segmenter, shared_data, labels) -> None:
    sample = next(s for s in nih_findings_samples(shared_data)
                  if s.split == "test" and s.boxes)
    pixels = read_radiograph(sample.image).pixels
    lungs = None
    if segmenter is not None:
        masks = segmenter(pixels).masks
        lungs = masks["right_lung"] | masks["left_lung"]
    network_input = classifier.input(pixels, lungs)
    maps = [classifier.heatmap(network_input, i, pixels.shape) for i in range(len(labels))]
    for heatmap in maps:
        assert heatmap.shape == pixels.shape and heatmap.dtype == np.float32
        assert heatmap.min() == pytest.approx(0.0)
        # scaled 0..1 on its own; a label whose map is zero everywhere stays flat
        assert heatmap.max() == pytest.approx(1.0) or heatmap.max() == 0.0
    assert any(heatmap.max() == pytest.approx(1.0) for heatmap in maps)


def test_lung_masking_blanks_outside_the_dilated_lungs() -> None:
    pixels = np.random.default_rng(0).uniform(10, 200, (300, 200)).astype(np.float32)
    lungs = np.zeros_like(pixels, dtype=bool)
    lungs[100:200, 50:100] = True
    whole = FindingsInput((64, 64), WHOLE_IMAGE)(pixels)
    masked = FindingsInput((64, 64), LUNG_MASKED, dilation=0.05)(pixels, lungs)
    assert masked.shape == whole.shape == (1, 1, 64, 64)
    assert float(masked[0, 0, :10].abs().max()) == 0.0  # far from the lungs
    centre = (slice(28, 36), slice(20, 28))
    assert float((masked[0, 0][centre] - whole[0, 0][centre]).abs().max()) == 0.0
    with pytest.raises(ValueError, match="lungs"):
        FindingsInput((64, 64), LUNG_MASKED)(pixels)


def test_lung_mask_dilation_is_the_square_max_filter() -> None:
    """network_mask dilates with a column then a row filter: the same mask as one square
    max filter, on a real image's lungs."""
    import torch
    import torch.nn.functional as F

    pixels = read_radiograph(RG1_UNCR).pixels
    masks = Segmenter.load("lung_seg")(pixels).masks
    lungs = masks["right_lung"] | masks["left_lung"]
    for dilation in (0.02, 0.03, 0.1):
        masking = FindingsInput((224, 224), LUNG_MASKED, dilation=dilation)
        area = torch.from_numpy(lungs.astype(np.float32))[None, None]
        square = F.max_pool2d((F.interpolate(area, size=(224, 224), mode="area") > 0).float(),
                              2 * masking.radius + 1, stride=1, padding=masking.radius)
        assert torch.equal(masking.network_mask(lungs), square)


def test_auc_matches_pairwise_counting() -> None:
    generator = np.random.default_rng(1)
    labels = generator.integers(0, 2, 60).astype(bool)
    scores = np.round(generator.normal(labels * 0.8, 1.0), 1)  # rounding makes ties
    pairs = [(p > n) + 0.5 * (p == n) for p in scores[labels] for n in scores[~labels]]
    assert roc_auc(labels, scores) == pytest.approx(np.mean(pairs))


def test_threshold_is_the_most_specific_with_target_sensitivity() -> None:
    generator = np.random.default_rng(2)
    labels = generator.integers(0, 2, 200).astype(bool)
    probabilities = generator.uniform(0, 1, 200)
    threshold = threshold_for_sensitivity(labels, probabilities, 0.9)
    assert sensitivity_specificity(labels, probabilities, threshold)[0] >= 0.9
    higher = np.nextafter(threshold, 1.0)
    assert sensitivity_specificity(labels, probabilities, higher)[0] < 0.9


def test_platt_scaling_undoes_overconfidence_and_shift() -> None:
    generator = np.random.default_rng(3)
    true_logits = generator.normal(0, 2, 5000)
    labels = generator.uniform(size=5000) < 1 / (1 + np.exp(-true_logits))
    scale, bias = fit_platt(3.0 * true_logits - 1.5, labels)  # i.e. true = z / 3 + 0.5
    assert scale == pytest.approx(1 / 3, rel=0.15)
    assert bias == pytest.approx(0.5, abs=0.15)


def test_nih_labels_and_boxes() -> None:
    normal = nih_labels("No Finding")
    assert len(normal) == 15 and not any(normal.values())
    both = nih_labels("Effusion|Pneumonia")
    assert {k for k, v in both.items() if v} == {"abnormal", "effusion", "pneumonia"}
    assert {k for k, v in nih_labels("Pleural_Thickening").items() if v} == {
        "abnormal", "pleural_thickening"}
    with pytest.raises(ValueError, match="finding_labels"):
        nih_labels(" ")
    with pytest.raises(ValueError, match="not NIH findings"):
        nih_labels("Fracture")
    assert parse_boxes("Pneumonia:1,2,3,4;Mass:5.5,6,7,8") == [
        ("Pneumonia", 1.0, 2.0, 3.0, 4.0), ("Mass", 5.5, 6.0, 7.0, 8.0)]
