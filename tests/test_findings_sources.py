"""What keeps the findings classifier from learning the image source: rank normalisation,
source re-styling, balanced drawing, shipping only supported labels, the layouts sites
bring, and the card's cross-source figures (recomputed here on the real images)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_core.io import read_radiograph
from cxr_core.models import build_network
from cxr_core.preprocess import EQUALIZE, ToModelInput, equalize
from cxr_core.segmentation import Segmenter
from cxr_core.stages.findings import FindingsClassifier
from cxr_core.training.augment import SourceStyle
from cxr_core.training.findings import NETWORK, balanced_weights, keep_outputs
from cxr_core.training.findings_data import LABELS, FindingsSample, kermany_samples
from cxr_core.training.findings_layouts import chexpert_samples, datalist_samples
from cxr_core.training.findings_sources import classify, leave_one_source_out, transfer_limits
from cxr_core.training.metrics import roc_auc

AUC_MARGIN = 0.02


@pytest.fixture(scope="module")
def nih_pixels(shared_data) -> np.ndarray:
    path = next((shared_data / "nih_cxr14_normal_pneumonia" / "images").glob("*.png"))
    return read_radiograph(path).pixels


# ------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(("change", "linear_sees_it"), [
    (lambda p: p * 257.0, False),                       # 8 -> 16 bits
    (lambda p: 1000.0 + 3.0 * p, False),                # another window / offset
    (lambda p: 255.0 * (p / 255.0) ** 0.5, True),       # gamma
    (lambda p: 255.0 * (p / 255.0) ** 2.0, True),
])
def test_equalized_input_does_not_see_bit_depth_window_or_gamma(nih_pixels, change,
                                                                 linear_sees_it) -> None:
    changed = change(nih_pixels).astype(np.float32)
    to_input = ToModelInput((224, 224), method=EQUALIZE)
    assert float((to_input(nih_pixels) - to_input(changed)).abs().mean()) < 0.01
    linear = ToModelInput((224, 224))
    moved = float((linear(nih_pixels) - linear(changed)).abs().mean())
    assert (moved > 0.01) == linear_sees_it  # what the percentile scaling alone would do


def test_equalize_gives_mid_ranks() -> None:
    images = torch.tensor([[[[0.0, 0.0], [0.5, 1.0]]]])
    assert equalize(images).flatten().tolist() == pytest.approx([1 / 6, 1 / 6, 2 / 3, 1.0])


def _sorted_mid_ranks(images: torch.Tensor) -> torch.Tensor:
    """The former equalize: mid-ranks from a sort and two searchsorted passes."""
    flat = (images.reshape(images.shape[0] * images.shape[1], -1) * 4096).round().contiguous()
    ordered = flat.sort(dim=1).values
    first = torch.searchsorted(ordered, flat, right=False)
    past = torch.searchsorted(ordered, flat, right=True)
    return ((first + past - 1).float() / (2.0 * max(flat.shape[1] - 1, 1))).reshape(images.shape)


@pytest.mark.parametrize("shape", [(1, 1, 224, 224), (3, 2, 17, 5), (1, 1, 1, 1)])
def test_counted_ranks_equal_sorted_ranks(shape, nih_pixels) -> None:
    """equalize counts ranks on its 4097 levels: bit for bit the sort-based ranks, with
    ties (a black border, values at 1), on a real radiograph and outside 0..1."""
    images = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    images[..., :1, :] = 0.0
    images[..., -1:, :] = 1.0
    assert torch.equal(equalize(images), _sorted_mid_ranks(images))
    real = ToModelInput((224, 224))(nih_pixels)
    assert torch.equal(equalize(real), _sorted_mid_ranks(real))
    wide = torch.randn(shape, generator=torch.Generator().manual_seed(2))  # sorted path
    assert torch.equal(equalize(wide), _sorted_mid_ranks(wide))


def test_source_style_restyles_and_equalizes() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.linspace(0, 1, 64 * 64).reshape(1, 1, 64, 64).repeat(4, 1, 1, 1)
    styled, targets = SourceStyle(probability=1.0)(images, images, generator)
    assert styled.shape == images.shape and targets is images
    assert not torch.allclose(styled, equalize(images), atol=1e-3)  # something changed
    assert float(styled.min()) >= 0.0 and float(styled.max()) <= 1.0
    untouched, _ = SourceStyle(probability=0.0, equalize=False)(images, images, generator)
    assert torch.equal(untouched, images)
    with pytest.raises(ValueError, match="downscale"):
        SourceStyle(downscale=(0.0, 1.0))
    with pytest.raises(ValueError, match="jpeg_quality"):
        SourceStyle(jpeg_quality=(50, 101))


# ---------------------------------------------------------------------- training


def _sample(source: str, view: str, abnormal: float) -> FindingsSample:
    return FindingsSample(image=Path("x.png"), labels={"abnormal": abnormal}, source=source,
                          view=view)


def test_balanced_weights_even_out_the_label_within_each_source_and_view() -> None:
    samples = ([_sample("nih", "AP", 0.0)] * 6 + [_sample("nih", "AP", 1.0)] * 2
               + [_sample("nih", "PA", 0.0)] * 1 + [_sample("nih", "PA", 1.0)] * 5
               + [_sample("covid", "PA", 1.0)] * 3)
    weights = balanced_weights(samples).numpy()
    for source, view, members in (("nih", "AP", 8), ("nih", "PA", 6)):
        index = [i for i, s in enumerate(samples) if (s.source, s.view) == (source, view)]
        sick = sum(weights[i] for i in index if samples[i].labels["abnormal"])
        well = sum(weights[i] for i in index if not samples[i].labels["abnormal"])
        assert sick == pytest.approx(well) and sick + well == pytest.approx(members)
    assert weights[-3:].tolist() == [1.0, 1.0, 1.0]  # one class only: left as it is


def test_keep_outputs_drops_labels_without_changing_the_others() -> None:
    torch.manual_seed(0)
    network = build_network("DenseNet", NETWORK).eval()
    kept = keep_outputs(network, ["abnormal", "effusion"])
    inputs = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        full, small = network(inputs), kept(inputs)
    columns = [LABELS.index("abnormal"), LABELS.index("effusion")]
    assert small.shape == (2, 2)
    assert torch.allclose(small, full[:, columns], atol=1e-5)


# ---------------------------------------------------------------------- layouts


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((256, 256), 100, np.uint8)).save(path)


def test_chexpert_csv_reads_frontal_images_with_uncertain_as_unknown(tmp_path) -> None:
    root = tmp_path / "CheXpert-v1.0-small"
    for name in ("p1/s1/view1_frontal.jpg", "p2/s1/view1_frontal.jpg", "p3/s1/view2_lateral.jpg"):
        _png(root / "train" / name)
    table = root / "train.csv"
    prefix = "CheXpert-v1.0-small/train"
    table.write_text(
        "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Cardiomegaly,Pleural Effusion,"
        "Pneumonia\n"
        f"{prefix}/p1/s1/view1_frontal.jpg,F,60,Frontal,PA,1.0,,0.0,\n"
        f"{prefix}/p2/s1/view1_frontal.jpg,M,70,Frontal,AP,,1.0,-1.0,0.0\n"
        f"{prefix}/p3/s1/view2_lateral.jpg,M,70,Lateral,,,1.0,,\n"
        f"{prefix}/p9/s1/missing.jpg,M,70,Frontal,AP,,1.0,,\n")
    samples = chexpert_samples(table, root)
    assert [s.view for s in samples] == ["PA", "AP"]
    assert samples[0].labels == {"effusion": 0.0, "abnormal": 0.0}
    assert samples[1].labels == {"cardiomegaly": 1.0, "pneumonia": 0.0, "abnormal": 1.0}
    (tmp_path / "other.csv").write_text("Image Index,Finding Labels\n")
    with pytest.raises(ValueError, match="not a CheXpert CSV"):
        chexpert_samples(tmp_path / "other.csv", root)


def test_monai_datalist_reads_lists_and_maps(tmp_path) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    listed = [0.0] * len(LABELS)
    listed[LABELS.index("effusion")] = listed[LABELS.index("abnormal")] = 1.0
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [
        {"image": "a.png", "label": listed},
        {"image": "b.png", "label": {"abnormal": 0}, "split": "val"}]}))
    first, second = datalist_samples(datalist)
    assert first.labels["effusion"] == 1.0 and first.image == tmp_path / "a.png"
    assert second.labels == {"abnormal": 0.0} and second.split == "val"
    datalist.write_text(json.dumps({"training": [{"image": "a.png", "label": {"x": 1}}]}))
    with pytest.raises(ValueError, match="unknown names"):
        datalist_samples(datalist)
    with pytest.raises(ValueError, match="no 'validation' list"):
        datalist_samples(datalist, key="validation")


# -------------------------------------------------------------- the shipped card


@pytest.fixture(scope="module")
def classifier() -> FindingsClassifier:
    return FindingsClassifier.load()


def test_card_reports_every_cross_source_check_and_says_it(classifier) -> None:
    evaluation = classifier.card.evaluation
    sources = evaluation["sources"]
    assert set(sources) >= {"kermany", "abnormal_only", "reencoded"}
    assert set(sources["abnormal_only"]) == {"hannover", "v7"}
    for label, fit in evaluation["labels"].items():
        assert fit["shipped"] == (label in classifier.card.labels)
        assert fit["shipped"] or fit["why_not"]
    # the limits are generated from these figures, so they cannot drift from them
    assert classifier.card.description.limitations == transfer_limits(classifier.card)
    kermany = sources["kermany"]["at_card_threshold"]["abnormal"]
    assert any(f"{kermany['auc']:.2f}" in line for line in transfer_limits(classifier.card))


def test_kermany_test_auc_holds_the_card_figure(classifier, shared_data) -> None:
    """Another hospital, children, both classes: recomputed from the images."""
    segmenter = Segmenter.load("lung_seg") if classifier.lung_masked else None
    test = [s for s in kermany_samples(shared_data) if s.split == "test"]
    column = classifier.card.labels.index("abnormal")
    scores = [classify(classifier, segmenter, read_radiograph(s.image).pixels)[column]
              for s in test]
    truth = [s.labels["abnormal"] > 0.5 for s in test]
    card = classifier.card.evaluation["sources"]["kermany"]["at_card_threshold"]["abnormal"]
    assert roc_auc(truth, scores) >= card["auc"] - AUC_MARGIN


def test_a_leave_one_source_out_run_becomes_card_figures_and_a_limit() -> None:
    """A `--without kermany` run's figures on Kermany go into the shipped card under
    leave_one_source_out, and the limits say what they mean; a run that left nothing out
    is refused with the argument's name."""
    shipped = FindingsClassifier.load().card
    with pytest.raises(ValueError, match="leave_out_run"):
        leave_one_source_out(shipped)
    run = copy.deepcopy(shipped)
    run.provenance.details["sources_left_out"] = ["kermany"]
    kermany = run.evaluation["sources"]["kermany"]["at_card_threshold"]["abnormal"]
    recorded = leave_one_source_out(run)
    assert recorded["kermany"]["figures"]["at_card_threshold"]["abnormal"] == kermany
    assert recorded["kermany"]["weights_sha256"] == run.weights_sha256
    card = copy.deepcopy(shipped)
    card.evaluation["leave_one_source_out"] = recorded
    limits = [line for line in transfer_limits(card) if line.startswith("Left out")]
    assert limits == [
        f"Left out of training, kermany reads AUC {kermany['auc']:.2f} "
        f"[{kermany['auc_ci95'][0]:.2f}-{kermany['auc_ci95'][1]:.2f}] "
        f"({kermany['n_positive']}/{kermany['n']}) (abnormal); at the NIH threshold "
        f"sensitivity {kermany['sensitivity']:.2f}, specificity {kermany['specificity']:.2f}: "
        "a source without normals in training is read as abnormal; a site should bring its "
        "own normals."]


def test_shipped_card_says_what_leaving_a_source_out_does() -> None:
    """The shipped card carries the Kermany leave-one-source-out run (its command, its
    weights and its figures on the Kermany test split) and the limit generated from it."""
    card = FindingsClassifier.load().card
    run = card.evaluation["leave_one_source_out"]["kermany"]
    assert "--without kermany" in run["command"] and len(run["weights_sha256"]) == 64
    assert run["weights_sha256"] != card.weights_sha256
    left_out = run["figures"]["at_card_threshold"]["abnormal"]
    kept = card.evaluation["sources"]["kermany"]["at_card_threshold"]["abnormal"]
    assert left_out["n"] == kept["n"] and left_out["auc"] < kept["auc"]
    assert any(line.startswith("Left out of training, kermany")
               for line in card.description.limitations)
