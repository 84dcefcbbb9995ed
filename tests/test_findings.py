"""The shipped findings model on the real NIH images, its calibration and operating points,
its heat maps, and its findings in every writer (JSON, heat-map PNGs, overlay, SR)."""

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
from cxr_core.training.findings_data import LABELS, nih_findings_samples, nih_labels, parse_boxes
from cxr_core.training.findings_evaluate import predict_samples
from cxr_core.training.metrics import roc_auc, sensitivity_specificity
from cxr_core.writers.files import write_outputs
from tests.conftest import RG1_UNCR, dciodvfy_errors, dsrdump

AUC_MARGIN = 0.02  # the card's figure was computed by the same code; allow numeric drift


@pytest.fixture(scope="module")
def classifier() -> FindingsClassifier:
    return FindingsClassifier.load()


@pytest.fixture(scope="module")
def segmenter(classifier) -> Segmenter | None:
    return Segmenter.load("lung_seg") if classifier.lung_masked else None


@pytest.fixture(scope="module")
def predictions(classifier, segmenter, shared_data) -> dict[str, tuple]:
    """``split -> (targets, probabilities, views)`` for val and test, from the images."""
    samples = nih_findings_samples(shared_data)
    results = {}
    for split in ("val", "test"):
        chosen = [s for s in samples if s.split == split]
        predicted = predict_samples(classifier, segmenter, chosen, lambda s: False)
        results[split] = (
            np.array([[p.sample.labels[label] for label in LABELS] for p in predicted]),
            np.stack([p.probabilities for p in predicted]),
            np.array([p.sample.view for p in predicted]))
    return results


def test_test_split_auc_is_at_least_the_card_figure(classifier, predictions) -> None:
    targets, probabilities, views = predictions["test"]
    figures = classifier.card.evaluation["test"]
    for index, label in enumerate(LABELS):
        for view in ("all", "AP", "PA"):
            inside = np.ones(len(views), bool) if view == "all" else views == view
            auc = roc_auc(targets[inside, index] > 0.5, probabilities[inside, index])
            assert auc >= figures[label][view]["auc"] - AUC_MARGIN, (label, view, auc)


def test_model_does_more_than_tell_ap_from_pa(classifier, predictions) -> None:
    """Within each view the view carries no information, so AUC above chance there is
    the model seeing something else; overall it must beat the 'PA view' score."""
    targets, probabilities, views = predictions["test"]
    for index, label in enumerate(LABELS):
        truth = targets[:, index] > 0.5
        view_only = roc_auc(truth, (views == "PA").astype(float))
        assert roc_auc(truth, probabilities[:, index]) > view_only + 0.05, label
        for view in ("AP", "PA"):
            inside = views == view
            assert roc_auc(truth[inside], probabilities[inside, index]) > 0.6, (label, view)


def test_card_thresholds_keep_val_sensitivity(classifier, predictions) -> None:
    targets, probabilities, _ = predictions["val"]
    for index, label in enumerate(LABELS):
        rules = classifier.card.runtime.classifier
        assert rules is not None
        threshold = rules.thresholds[label]
        sensitivity, _ = sensitivity_specificity(targets[:, index] > 0.5,
                                                 probabilities[:, index], threshold)
        assert sensitivity >= 0.90 - 1e-6, label


def test_engine_findings_reach_json_heatmaps_overlay_and_sr(engine, tmp_path) -> None:
    analysis = engine.analyze(read_radiograph(RG1_UNCR))
    by_name = {f.name: f for f in analysis.findings if f.name in LABELS}
    assert set(by_name) == set(LABELS)  # other stages may add their own findings
    for name, finding in by_name.items():
        assert finding.code == FINDING_CODES[name]
        assert 0.0 <= finding.probability <= 1.0
        assert finding.positive == (finding.probability >= finding.threshold)
        assert (finding.heatmap is not None) == finding.positive
    outputs = write_outputs(analysis, tmp_path)
    listed = [f for f in json.loads(outputs.files["json"].read_text())["findings"]
              if f["name"] in LABELS]
    assert len(listed) == len(LABELS)
    for item in listed:
        assert set(item) >= {"name", "code", "probability", "threshold", "positive"}
        heatmap_path = outputs.folder / "heatmaps" / f"{item['name']}.png"
        assert heatmap_path.is_file() == item["positive"]
        if item["positive"]:
            assert Image.open(heatmap_path).size[::-1] == analysis.radiograph.shape
    sr_path = outputs.files["sr"]
    assert dciodvfy_errors(sr_path) == []
    dump = dsrdump(sr_path)
    for code in (FINDING_CODES[label] for label in LABELS):
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


def test_heatmaps_are_at_source_resolution(classifier, segmenter, shared_data) -> None:
    sample = next(s for s in nih_findings_samples(shared_data)
                  if s.split == "test" and s.boxes)
    pixels = read_radiograph(sample.image).pixels
    lungs = None
    if segmenter is not None:
        masks = segmenter(pixels).masks
        lungs = masks["right_lung"] | masks["left_lung"]
    network_input = classifier.input(pixels, lungs)
    maps = [classifier.heatmap(network_input, i, pixels.shape) for i in range(len(LABELS))]
    for heatmap in maps:
        assert heatmap.shape == pixels.shape and heatmap.dtype == np.float32
        assert heatmap.min() == pytest.approx(0.0) and heatmap.max() == pytest.approx(1.0)


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
    assert nih_labels("No Finding") == {"abnormal": 0.0, "pneumonia": 0.0}
    assert nih_labels("Effusion|Pneumonia") == {"abnormal": 1.0, "pneumonia": 1.0}
    assert nih_labels("Effusion") == {"abnormal": 1.0, "pneumonia": 0.0}
    with pytest.raises(ValueError, match="finding_labels"):
        nih_labels(" ")
    assert parse_boxes("Pneumonia:1,2,3,4;Mass:5.5,6,7,8") == [
        ("Pneumonia", 1.0, 2.0, 3.0, 4.0), ("Mass", 5.5, 6.0, 7.0, 8.0)]
