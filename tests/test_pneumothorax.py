"""Pneumothorax: the SIIM RLE reader, the training sources and command, the shipped model
against its card, and the stage through the engine and every writer."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from cxr_core.cli import main as cxr_main
from cxr_core.io import read_radiograph
from cxr_core.io.seg_reader import read_seg
from cxr_core.io.sr_reader import read_sr
from cxr_core.measure import make_segment
from cxr_core.models import default_models_dir, load_model
from cxr_core.models.card import file_sha256
from cxr_core.pneumothorax_size import bts_rim, collins, hemithorax, hemithorax_percent
from cxr_core.radiograph import PixelSpacing, SpacingSource
from cxr_core.segmentation import Segmenter
from cxr_core.stages.pneumothorax import (
    MinimumArea,
    PneumothoraxDetector,
    PneumothoraxStage,
    ThoraxGate,
    side_measurements,
)
from cxr_core.training.augment import LesionSwap
from cxr_core.training.data import KNOWN_MASK, KNOWN_PRESENT, read_mask
from cxr_core.training.losses import LesionMilLoss, MaskedBceDiceLoss
from cxr_core.training.pneumothorax_card import limits_statement
from cxr_core.training.pneumothorax_evaluate import evaluate_pneumothorax, siim_style
from cxr_core.training.pneumothorax_sources import (
    SOURCE_CHECK,
    MaskFiles,
    Sources,
    count_samples,
    hash_split,
    is_positive,
    png_folder_samples,
    siim_samples,
)
from cxr_core.training.rle import decode_union, read_rle_table, rle_decode, rle_encode
from cxr_core.writers.files import write_outputs
from tests.conftest import DICOM_SAMPLES, dciodvfy_errors, dsrdump

SIIM_DICOM = next(DICOM_SAMPLES.glob("siim_*.dcm"))
PTX_CODE = "36118008"


def _manifest(shared_data: Path) -> list[dict[str, str]]:
    with (shared_data / "pneumothorax_siim_github" / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _rle_table(shared_data: Path) -> dict[str, list[str]]:
    return read_rle_table(shared_data / "label_tables" / "siim-pneumothorax-train-rle.csv.gz")


# ------------------------------------------------------------------------------ RLE
def test_rle_decodes_a_hand_written_example() -> None:
    # 3 rows x 4 columns, column-major: pixel k is (row k % 3, column k // 3).
    # "1 2 4 1": skip 1, fill 2 (k = 1, 2), skip 4 after that run's end (k = 3..6), fill k = 7.
    expected = np.array([[0, 0, 0, 0],
                         [1, 0, 1, 0],
                         [1, 0, 0, 0]], dtype=bool)
    decoded = rle_decode("1 2 4 1", shape=(3, 4))
    np.testing.assert_array_equal(decoded, expected)
    assert rle_encode(expected) == "1 2 4 1"
    assert not rle_decode("-1", shape=(3, 4)).any()
    assert rle_encode(np.zeros((3, 4), dtype=bool)) == "-1"


@pytest.mark.parametrize("encoded", ["1 2 3", "0 13", "a b"])
def test_rle_refuses_malformed_runs(encoded: str) -> None:
    with pytest.raises(ValueError, match="encoded"):
        rle_decode(encoded, shape=(3, 4))


def test_rle_rows_match_the_shared_mask_pngs(shared_data: Path) -> None:
    """The SIIM CSV decoded here gives the masks the dataset shipped, including the
    union of images with two RLE rows."""
    table = _rle_table(shared_data)
    rows = [r for r in _manifest(shared_data) if r["label_pneumothorax"] == "1"]
    chosen = [r for r in rows if r["n_rle_components"] == "2"] + rows[:2]
    for row in chosen:
        encodings = table[row["source_id"]]
        assert len(encodings) == int(row["n_rle_components"])
        mask = decode_union(encodings)
        assert round(float(mask.mean()), 5) == float(row["mask_area_fraction"])
        shipped = read_mask(shared_data / "pneumothorax_siim_github" / row["mask_pneumothorax"])
        halved = mask.reshape(512, 2, 512, 2).mean(axis=(1, 3)) >= 0.5
        dice = 2 * (halved & shipped).sum() / (halved.sum() + shipped.sum())
        assert dice > 0.99, row["source_id"]
        if len(encodings) == 1:
            assert rle_encode(mask) == encodings[0]


# -------------------------------------------------------------------------- sources
def test_siim_layout_reads_dicom_folder_and_rle_csv(tmp_path: Path) -> None:
    folder = tmp_path / "dicom" / "nested"
    folder.mkdir(parents=True)
    (folder / "a.dcm").symlink_to(SIIM_DICOM)
    (folder / "other.dcm").symlink_to(DICOM_SAMPLES / "RG1_UNCR.dcm")  # not in the CSV
    image_id = str(pydicom.dcmread(SIIM_DICOM, stop_before_pixels=True).SOPInstanceUID)
    table = tmp_path / "train-rle.csv"
    table.write_text(f"ImageId, EncodedPixels\n{image_id}, 5000 40 984 40\n"
                     f"{image_id}, 300000 10\n")
    samples = siim_samples(tmp_path / "dicom", table, MaskFiles(tmp_path / "masks"))
    assert [s.key for s in samples] == [image_id]
    expected = rle_decode("5000 40 984 40") | rle_decode("300000 10")
    np.testing.assert_array_equal(read_mask(samples[0].masks["pneumothorax"]), expected)
    patient = str(pydicom.dcmread(SIIM_DICOM, stop_before_pixels=True).PatientID)
    assert samples[0].split == hash_split(patient, "siim")


def test_shared_sources_hold_out_siim_negatives(shared_data: Path) -> None:
    samples = Sources(data_root=shared_data, nih_negatives=20).samples(MaskFiles())
    held_out = [s for s in samples if s.split == SOURCE_CHECK]
    assert len(held_out) == 3 and all(s.source == "siim" for s in held_out)
    assert not any(read_mask(s.masks["pneumothorax"]).any() for s in held_out)
    nih = [s for s in samples if s.source == "nih_normal"]
    assert all(not read_mask(s.masks["pneumothorax"]).any() for s in nih)
    assert max(sum(s.split == split for s in nih) for split in ("train", "val", "test")) <= 20


def test_shared_sources_add_pneumonia_negatives_without_pneumothorax(shared_data: Path) -> None:
    samples = Sources(data_root=shared_data, nih_negatives=5,
                      nih_pneumonia_negatives=300).samples(MaskFiles())
    sick = {s.key for s in samples if s.source == "nih_pneumonia"}
    with (shared_data / "nih_cxr14_normal_pneumonia" / "manifest.csv").open() as handle:
        rows = {r["source_id"]: r for r in csv.DictReader(handle)}
    assert sick and all(rows[key]["label_normal_abnormal"] == "abnormal" for key in sick)
    labelled = {k for k, r in rows.items() if "Pneumothorax" in r["label_findings"]}
    assert len(labelled) == 9 and not sick & labelled  # kept for the NIH label check
    assert len(sick) == sum(r["label_normal_abnormal"] == "abnormal" for r in rows.values()) - 9


def test_nih_labelled_adds_train_split_report_labels_without_masks(shared_data: Path) -> None:
    """NIH images whose report says Pneumothorax join as image-level positives (no mask),
    from the train split only: the val split is unchanged and val/test stay unseen."""
    plain = Sources(data_root=shared_data, nih_negatives=5).samples(MaskFiles())
    samples = Sources(data_root=shared_data, nih_negatives=5,
                      nih_labelled=True).samples(MaskFiles())
    labelled = [s for s in samples if s.source == "nih_labelled"]
    assert labelled and all(s.split == "train" and not s.masks and s.present == ("pneumothorax",)
                            for s in labelled)
    assert all(is_positive(s) for s in labelled)
    counts = count_samples(samples)
    # 8 in nih_cxr14_normal_pneumonia's train split + 12 in nih_cxr14_multilabel's
    assert counts["train"]["nih_labelled_positive"] == 20
    assert counts["train"]["nih_multilabel_negative"] > 100
    assert counts["val"] == count_samples(plain)["val"]
    assert counts["test"] == count_samples(plain)["test"]


def test_image_level_term_teaches_a_positive_without_a_mask() -> None:
    """A mask-less positive adds no pixel loss; its image score (mean of the top pixels'
    logits) is pushed up, a known-empty negative's down."""
    pixel = MaskedBceDiceLoss(focal_gamma=2.0, empty_dice=True)
    loss = LesionMilLoss(pixel_loss=pixel, image_weight=1.0, top_fraction=0.05)
    logits = torch.full((2, 1, 16, 16), -3.0, requires_grad=True)
    targets = torch.zeros(2, 1, 16, 16)
    known = torch.tensor([[KNOWN_PRESENT], [KNOWN_MASK]])
    with torch.no_grad():
        assert float(pixel(logits, targets, torch.tensor([[KNOWN_PRESENT], [0.0]]))) == 0.0
    loss(logits, targets, known).backward()
    assert logits.grad is not None
    assert float(logits.grad[0].sum()) < 0  # gradient descent raises the positive's logits
    assert float(logits.grad[1].sum()) > 0  # and lowers the negative's
    with pytest.raises(ValueError, match="top_fraction"):
        LesionMilLoss(pixel_loss=pixel, top_fraction=0.0)


def _png_folder(shared_data: Path, root: Path, count: int) -> None:
    """An images/ + masks/ folder (links to the shared PNGs, all-zero masks for NIH)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    siim = shared_data / "pneumothorax_siim_github"
    for row in [r for r in _manifest(shared_data) if r["label_pneumothorax"] == "1"][:count]:
        stem = row["source_id"]
        (root / "images" / f"{stem}.png").symlink_to(siim / row["image"])
        (root / "masks" / f"{stem}.png").symlink_to(siim / row["mask_pneumothorax"])
    nih = shared_data / "nih_cxr14_normal_pneumonia"
    for image in sorted((nih / "images").glob("*.png"))[:count]:
        (root / "images" / image.name).symlink_to(image)
        Image.fromarray(np.zeros((512, 512), np.uint8)).save(root / "masks" / image.name)


def test_train_and_evaluate_commands_on_a_png_folder(shared_data: Path, tmp_path: Path) -> None:
    """A hospital's own images/ + masks/ folder trains and evaluates in one command each."""
    _png_folder(shared_data, tmp_path / "site", 12)
    splits = {s.split for s in png_folder_samples(tmp_path / "site")}
    assert {"train", "val", "test"} <= splits
    out = tmp_path / "model"
    assert cxr_main(["train", "pneumothorax", "--no-shared", "--folder", str(tmp_path / "site"),
                     "--size", "64", "--epochs", "3", "--out", str(out)]) == 0
    _, card = load_model(out)
    assert card.provenance.command.startswith("cxr train pneumothorax --no-shared")
    assert card.evaluation["split"] == "test" and card.evaluation["n_images"] > 0
    assert (out / "training_curves.png").is_file() and (out / "montage.png").is_file()
    assert cxr_main(["evaluate", "pneumothorax", "--no-shared", "--folder",
                     str(tmp_path / "site"), "--model", str(out), "--bootstrap", "50",
                     "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["dice_positive"]["mean"] == pytest.approx(
        card.evaluation["dice_positive"]["mean"], abs=1e-4)
    # the SIIM-vs-NIH source check needs the shared sets; a site's own folder says so
    assert metrics["source_check"]["reading"].startswith("not run")
    assert "Source check" not in card.evaluation["limits"]


def _swap_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two 32x32 images: a 'SIIM' positive (0.8, lesion 0.2 in rows 10-19, columns 4-9)
    and an 'NIH' negative (a 0.3 + ramp so pasted pixels show where they came from)."""
    positive = torch.full((1, 1, 32, 32), 0.8)
    lesion = torch.zeros((1, 1, 32, 32))
    lesion[..., 10:20, 4:10] = 1
    positive[lesion > 0] = 0.2
    negative = 0.3 + torch.linspace(0, 0.2, 32).view(1, 1, 1, 32).expand(1, 1, 32, 32)
    return positive, lesion, negative.clone(), torch.zeros_like(lesion)


def test_lesion_swap_moves_a_lesion_into_a_negative() -> None:
    positive, lesion, negative, empty = _swap_batch()
    swap = LesionSwap(positives=positive, positive_targets=lesion, negatives=negative,
                      to_positive=1.0, to_negative=0.0, margin=2, feather=2)
    images, targets = swap(negative, empty, torch.Generator().manual_seed(0))
    torch.testing.assert_close(targets, lesion)
    inside = lesion > 0
    # the pasted lesion keeps its contrast to its surroundings (ring offset 0.8 -> ~0.4)
    assert float(images[inside].mean()) < float(negative[inside].mean()) - 0.15
    far = torch.ones_like(lesion, dtype=torch.bool)
    far[..., 4:26, :16] = False
    torch.testing.assert_close(images[far], negative[far])


def test_lesion_swap_covers_a_lesion_and_empties_its_target() -> None:
    positive, lesion, negative, _ = _swap_batch()
    swap = LesionSwap(positives=positive, positive_targets=lesion, negatives=negative,
                      to_positive=0.0, to_negative=1.0, margin=2, feather=2)
    images, targets = swap(positive, lesion, torch.Generator().manual_seed(0))
    assert not targets.any()
    # the dark lesion is gone: the covered region is as bright as the rest of the image
    assert float(images[lesion > 0].mean()) > 0.7
    unchanged = LesionSwap(positives=positive, positive_targets=lesion, negatives=negative,
                           to_positive=0.0, to_negative=0.0)
    images, targets = unchanged(positive, lesion, torch.Generator().manual_seed(0))
    torch.testing.assert_close(images, positive)
    torch.testing.assert_close(targets, lesion)


def test_lesion_swap_names_a_bad_argument() -> None:
    positive, lesion, negative, _ = _swap_batch()
    with pytest.raises(ValueError, match="to_negative"):
        LesionSwap(positives=positive, positive_targets=lesion, negatives=negative,
                   to_negative=1.5)
    with pytest.raises(ValueError, match="positive_targets"):
        LesionSwap(positives=positive, positive_targets=lesion[..., :16], negatives=negative)


def test_siim_style_reencodes_like_the_siim_pipeline(shared_data: Path) -> None:
    """NIH pixels through Lanczos 1024 + JPEG q92 + Lanczos back: the same image, with
    small changes everywhere (the 8-bit PNG is not returned as it was)."""
    image = next((shared_data / "nih_cxr14_normal_pneumonia" / "images").glob("*.png"))
    pixels = read_radiograph(image).pixels
    again = siim_style(pixels)
    assert again.shape == pixels.shape and again.dtype == np.float32
    difference = np.abs(again - pixels)
    assert 0 < float(difference.mean()) < 3
    with pytest.raises(ValueError, match="pixels"):
        siim_style(pixels * 256)


# ------------------------------------------------------------------- shipped model
@pytest.fixture(scope="module")
def detector() -> PneumothoraxDetector:
    return PneumothoraxDetector.load()


@pytest.fixture(scope="module")
def measured(shared_data: Path, detector: PneumothoraxDetector, tmp_path_factory) -> dict:
    """The shipped model re-evaluated on the shared test split exactly as its card was
    made: with the lung model (thorax gate, healthy-lung check) and the NIH-label check."""
    card = detector.segmenter.card
    sources = Sources(data_root=shared_data,
                      nih_negatives=card.provenance.details["nih_negatives_per_split"],
                      nih_pneumonia_negatives=card.provenance.details.get(
                          "nih_pneumonia_negatives_per_split", 0),
                      nih_labelled=bool(card.provenance.details.get("nih_labelled")))
    return evaluate_pneumothorax(detector, sources.samples(MaskFiles()),
                                 tmp_path_factory.mktemp("ptx_eval"), split="test",
                                 lung=Segmenter.load("lung_seg"), bootstrap=200,
                                 data_root=shared_data)


def test_card_states_weights_data_and_limits() -> None:
    network, card = load_model("pneumothorax")
    directory = default_models_dir() / "pneumothorax"
    assert file_sha256(directory / card.weights_file) == card.weights_sha256
    assert (directory / card.weights_file).stat().st_size < 5 * 1024 * 1024
    assert card.labels == ["pneumothorax"]
    assert card.provenance.command.replace(" -v", "").startswith("cxr train pneumothorax")
    assert all("SOURCE.md" in d for d in card.provenance.datasets)
    assert card.provenance.counts["train"]["siim_positive"] == 31
    assert "lesion swap" in card.provenance.details["augmentation"]
    assert card.runtime.lesion is not None and card.runtime.lesion.thorax_min_inside > 0
    # the plain statement is the one written from the card's own figures
    limits = card.evaluation["limits"]
    assert limits == limits_statement(card.provenance.counts, card.evaluation)
    assert "Research use only" in limits
    assert card.evaluation["caveat"].startswith("tiny split")


def test_test_split_figures_match_card(measured: dict, detector) -> None:
    claimed = detector.segmenter.card.evaluation
    for key in ("dice_positive", "kaggle_mean_dice"):
        assert measured[key]["mean"] == pytest.approx(claimed[key]["mean"], abs=0.01), key
    assert measured["detection_auc"]["auc"] == pytest.approx(
        claimed["detection_auc"]["auc"], abs=0.01)
    assert measured["specificity"]["value"] == pytest.approx(
        claimed["specificity"]["value"], abs=0.02)
    assert measured["n_positive"] == claimed["n_positive"] == 5
    # how far to trust each reported mask, on the positives that got one
    quality = measured["mask_quality"]
    assert quality["n_positive"] == 5 and quality["n"] + quality["n_missed_no_estimate"] == 5
    # the model finds pneumothorax better than chance on unseen SIIM positives, and
    # leaves sick NIH chests (pneumonia, lines) mostly alone
    assert measured["dice_positive"]["mean"] > 0.2
    assert measured["detection_auc"]["auc"] > 0.75
    assert measured["specificity"]["value"] > 0.9


def test_model_did_not_learn_the_encoding_pipeline(measured: dict, detector) -> None:
    """Source check, as the issue asks: the same NIH negatives scored as they are and
    re-encoded the SIIM way score alike, and pneumothorax on NIH images (the negatives'
    source, never trained on) is found - a model scoring the source could do neither."""
    check = measured["source_check"]
    claimed = detector.segmenter.card.evaluation["source_check"]
    pipeline = check["auc_siim_style_vs_as_is"]
    assert pipeline["n_positive"] == pipeline["n_negative"] > 100
    low, high = pipeline["ci95"]
    assert low < 0.5 < high
    assert abs(check["siim_style_change"]["mean"]) < 0.01
    labelled = check["auc_nih_pneumothorax_vs_normal"]
    assert labelled["n_positive"] == 9
    assert labelled["auc"] > 0.8 and labelled["ci95"][0] > 0.5
    for name in ("auc_siim_style_vs_as_is", "auc_nih_pneumothorax_vs_normal",
                 "auc_siim_vs_nih_negative", "auc_siim_healthy_vs_nih_lung"):
        assert check[name]["auc"] == pytest.approx(claimed[name]["auc"], abs=0.01), name


def test_card_states_what_the_source_check_could_not_rule_out(measured: dict,
                                                             detector) -> None:
    """Healthy lungs of SIIM images score above NIH lungs; the card says so with the
    counts at the operating point, and the 3 SIIM negatives are called too few."""
    check = measured["source_check"]
    healthy = check["auc_siim_healthy_vs_nih_lung"]
    assert healthy["n_positive"] >= 10 and check["auc_siim_vs_nih_negative"]["n_positive"] == 3
    limits = detector.segmenter.card.evaluation["limits"]
    assert f"AUC {healthy['auc']:.2f}" in limits and "too few images to decide" in limits
    # the NIH multilabel set (PA normals) decides whether pneumothorax transfers to NIH
    # images; where it does not, the card must not call the source ruled out
    multilabel = check["nih_transfer"]["multilabel"]["auc_vs_normal"]
    if multilabel["ci95"][0] <= 0.5:
        assert "not found better than chance" in limits
        assert "the source is not the model's shortcut" not in limits
    else:
        assert (f"{check['siim_healthy_lung']['reported_present']} of "
                f"{check['siim_healthy_lung']['n']} vs {check['nih_lung']['reported_present']} "
                f"of {check['nih_lung']['n']} lungs") in limits


def test_thorax_gate_drops_regions_outside_the_lungs() -> None:
    lungs = np.zeros((100, 100), bool)
    lungs[20:70, 10:45] = True
    mask = np.zeros_like(lungs)
    mask[25:40, 12:20] = True   # apex region, inside the lung
    mask[85:95, 30:40] = True   # under the diaphragm
    gate = ThoraxGate(margin_fraction=0.02, min_inside=0.5)
    kept = gate(mask, lungs)
    assert kept[30, 15] and not kept[90, 35]
    np.testing.assert_array_equal(gate(mask, np.zeros_like(lungs)), mask)
    with pytest.raises(ValueError, match="lungs"):
        gate(mask, lungs[:50])
    with pytest.raises(ValueError, match="min_inside"):
        ThoraxGate(min_inside=2)


def test_thorax_gate_within_the_regions_box_equals_the_whole_image() -> None:
    """The gate labels regions within their box: the same kept pixels as labelling the
    whole image (the former code, inlined here), regions at the image's edges included."""
    from scipy import ndimage

    def whole_image(mask: np.ndarray, lungs: np.ndarray, gate: ThoraxGate) -> np.ndarray:
        labels, count = ndimage.label(mask)
        margin = max(1, round(gate.margin_fraction * mask.shape[1]))
        grown = ndimage.binary_dilation(lungs, structure=np.ones((3, 3), bool),
                                        iterations=margin)
        inside = np.asarray(ndimage.mean(grown, labels, index=np.arange(1, count + 1)))
        return np.concatenate([[False], inside >= gate.min_inside])[labels]

    generator = np.random.default_rng(3)
    gate = ThoraxGate(margin_fraction=0.03, min_inside=0.5)
    some_kept = some_dropped = False
    for _ in range(20):
        lungs = np.zeros((120, 90), bool)
        lungs[generator.integers(0, 40):generator.integers(60, 120),
              generator.integers(0, 30):generator.integers(40, 90)] = True
        mask = ndimage.binary_dilation(generator.random(lungs.shape) > 0.995, iterations=2)
        mask[0, :3] = mask[-1, -2:] = True  # regions on the image's edges
        kept = gate(mask, lungs)
        np.testing.assert_array_equal(kept, whole_image(mask, lungs, gate))
        some_kept |= bool(kept.any())
        some_dropped |= bool((mask & ~kept).any())
    assert some_kept and some_dropped
    empty = np.zeros((50, 50), bool)
    assert gate(empty, np.ones_like(empty)) is empty


# ----------------------------------------------------------------- in the product
def _test_positives(shared_data: Path) -> list[dict[str, str]]:
    return [r for r in _manifest(shared_data)
            if r["split"] == "test" and r["label_pneumothorax"] == "1"]


def test_stage_reports_side_area_and_hemithorax_share(engine, shared_data: Path) -> None:
    reported = 0
    for row in _test_positives(shared_data):
        analysis = engine.analyze(read_radiograph(shared_data / "pneumothorax_siim_github"
                                                  / row["image"]))
        finding = next(f for f in analysis.findings if f.name == "pneumothorax")
        assert finding.code.value == PTX_CODE and 0 <= finding.probability <= 1
        if not finding.positive:
            assert "pneumothorax" not in analysis.segments
            continue
        reported += 1
        truth = read_mask(shared_data / "pneumothorax_siim_github" / row["mask_pneumothorax"])
        # patient-right is on image-left
        truth_side = "right" if np.nonzero(truth)[1].mean() < truth.shape[1] / 2 else "left"
        names = {m.name: m for m in analysis.measurements}
        assert f"pneumothorax_{truth_side}_area" in names
        assert names[f"pneumothorax_{truth_side}_area"].unit == "{pixels}"  # PNG: no spacing
        percent = names[f"pneumothorax_{truth_side}_hemithorax_percent"]
        assert 0 < percent.value < 100 and percent.unit == "%"
        assert analysis.segments["pneumothorax"].pixel_count > 0
    assert reported >= 3


def test_small_pneumothorax_is_not_reported(detector, shared_data: Path) -> None:
    from cxr_core.analysis import Analysis

    row = _test_positives(shared_data)[0]
    radiograph = read_radiograph(shared_data / "pneumothorax_siim_github" / row["image"])
    strict = PneumothoraxStage(PneumothoraxDetector(detector.segmenter,
                                                    MinimumArea(fraction=0.5)))
    analysis = Analysis(radiograph=radiograph)
    strict.run(analysis)
    finding = analysis.findings[0]
    assert not finding.positive and "pneumothorax" not in analysis.segments
    assert not [m for m in analysis.measurements if m.name.startswith("pneumothorax")]
    assert finding.probability == pytest.approx(detector(radiograph.pixels,
                                                         radiograph.spacing).probability,
                                                abs=1e-4)


def _pixels_spacing(path: Path) -> tuple:
    radiograph = read_radiograph(path)
    return radiograph.pixels, radiograph.spacing


def test_seg_sr_overlay_and_masks_carry_the_pneumothorax(engine, detector, shared_data: Path,
                                                         tmp_path: Path) -> None:
    """A SIIM DICOM header with a positive image's pixels: mm² from PixelSpacing, a
    Pneumothorax segment in the SEG, and a valid SR with area, % and laterality."""
    root = shared_data / "pneumothorax_siim_github"
    found = {r["image"]: detector(*_pixels_spacing(root / r["image"]))
             for r in _test_positives(shared_data)}
    chosen = max(found, key=lambda image: found[image].mask.sum())
    assert found[chosen].present
    pixels = Image.open(root / chosen)
    dicom = read_radiograph(SIIM_DICOM)
    upsampled = np.asarray(pixels.convert("L").resize(dicom.shape[::-1], Image.BILINEAR),
                           dtype=np.float32)
    analysis = engine.analyze(dataclasses.replace(dicom, pixels=upsampled))
    assert next(f for f in analysis.findings if f.name == "pneumothorax").positive
    written = write_outputs(analysis, tmp_path)
    assert read_mask(written.files["mask:pneumothorax"]).any()
    overlay = np.asarray(Image.open(written.files["overlay"]).convert("RGB"))
    assert (overlay == (255, 220, 0)).all(axis=2).any()  # the pneumothorax outline colour
    seg = read_seg(written.files["seg"])
    np.testing.assert_array_equal(seg.masks["pneumothorax"],
                                  analysis.segments["pneumothorax"].mask)
    dataset = pydicom.dcmread(written.files["seg"])
    item = next(s for s in dataset.SegmentSequence if s.SegmentLabel == "Pneumothorax")
    assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == PTX_CODE
    assert not dciodvfy_errors(written.files["sr"])
    quality = analysis.segments["pneumothorax"].quality  # how far to trust it, in the SR too
    assert 0 < quality <= 1 and read_sr(written.files["sr"]).quality["pneumothorax"] == quality
    text = dsrdump(written.files["sr"])
    area = next(m for m in analysis.measurements if m.name.endswith("_area")
                and m.name.startswith("pneumothorax_"))
    assert area.unit == "mm2"
    side = "Right" if "_right_" in area.name else "Left"
    assert "Pneumothorax percentage of hemithorax" in text
    # trusted spacing: Collins' estimate beside the %, coded and in the SR
    estimate = next(m for m in analysis.measurements if m.name.endswith("_collins_percent"))
    assert 4.2 <= estimate.value <= 100 and "Collins" in estimate.derivation
    assert "Pneumothorax size by Collins formula" in text
    assert f'"{side}")' in text and 'Pneumothorax")=(52101004,SCT,"Present")' in text


# --------------------------------------------------------------------------- size
def _collapsed_right_lung() -> tuple[np.ndarray, np.ndarray]:
    """A right hemithorax (image-left) 200 x 100 px whose lung has collapsed: 50 px of air
    above its apex, 30 px beside it down to row 124 and 40 px below."""
    lung = np.zeros((220, 240), bool)
    lung[60:210, 40:110] = True
    lung[135:210, 40:50] = False
    cavity = np.zeros_like(lung)
    cavity[10:210, 10:110] = True
    return cavity & ~lung, lung


def test_hemithorax_percent_counts_air_outside_and_inside_the_lung_mask() -> None:
    lung = np.zeros((100, 100), bool)
    lung[:, 20:60] = True
    lesion = np.zeros_like(lung)
    lesion[:, 10:20] = True  # air the lung model left out: the union adds it
    assert hemithorax_percent(lesion, lung) == pytest.approx(20.0)
    lesion[:, 20:30] = True  # air the lung model drew as lung (a large pneumothorax)
    assert hemithorax_percent(lesion, lung) == pytest.approx(40.0)
    ring = np.zeros_like(lung)
    ring[40:60, 30:50] = True
    ring[45:55, 35:45] = False  # a hole in the lung mask belongs to the hemithorax
    assert hemithorax(ring, np.zeros_like(ring)).sum() == 400
    with pytest.raises(ValueError, match="empty hemithorax"):
        hemithorax_percent(np.zeros_like(lung), np.zeros_like(lung))


def test_collins_reads_the_interpleural_distances_of_a_known_geometry() -> None:
    lesion, lung = _collapsed_right_lung()
    spacing = PixelSpacing(0.5, 0.25, SpacingSource.PIXEL_SPACING)
    estimate = collins(lesion, lung, spacing, lateral_left=True)
    assert estimate is not None
    # apex 50 rows x 0.5 mm; beside the lung 30 and 40 columns x 0.25 mm at the
    # midpoints of its upper (row 97) and lower (row 172) halves
    assert (estimate.apical_cm, estimate.upper_cm, estimate.lower_cm) == pytest.approx(
        (2.5, 0.75, 1.0))
    assert estimate.percent == pytest.approx(4.2 + 4.7 * 4.25)
    mirrored = collins(lesion[:, ::-1], lung[:, ::-1], spacing, lateral_left=False)
    assert mirrored == estimate
    assert "Collins" in estimate.derivation(spacing) and "erect PA" in estimate.derivation(spacing)


def test_bts_rim_is_read_at_the_hilum_and_says_large_from_two_centimetres() -> None:
    lesion, lung = _collapsed_right_lung()
    fine = PixelSpacing(0.5, 0.25, SpacingSource.PIXEL_SPACING)
    rim = bts_rim(lesion, lung, fine, lateral_left=True)
    # hilum = mid-height of the collapsed lung (rows 60-209 -> row 134): 30 px x 0.25 mm
    assert rim is not None and rim.rim_mm == pytest.approx(7.5) and not rim.large
    coarse = PixelSpacing(0.8, 0.8, SpacingSource.PIXEL_SPACING)
    big = bts_rim(lesion, lung, coarse, lateral_left=True)
    assert big is not None and big.rim_mm == pytest.approx(24.0) and big.large
    assert "large" in big.derivation(coarse) and "BTS" in big.derivation(coarse)
    assert bts_rim(lesion, lung, PixelSpacing.unknown(), lateral_left=True) is None
    segments = {"right_lung": make_segment("right_lung", lung, fine),
                "left_lung": make_segment("left_lung", lung[:, ::-1], fine)}
    by_name = {m.name: m for m in side_measurements(lesion, segments, fine)}
    assert by_name["pneumothorax_right_hilum_rim"].value == pytest.approx(7.5)
    assert by_name["pneumothorax_right_hilum_rim"].unit == "mm"


def test_no_collins_without_trusted_spacing_or_collapsed_lung() -> None:
    lesion, lung = _collapsed_right_lung()
    untrusted = PixelSpacing(0.5, 0.5, SpacingSource.UNKNOWN)
    assert not untrusted.trusted
    assert collins(lesion, lung, untrusted, lateral_left=True) is None
    assert collins(lesion, lung, PixelSpacing.unknown(), lateral_left=True) is None
    trusted = PixelSpacing(0.5, 0.5, SpacingSource.PIXEL_SPACING)
    assert collins(lesion | lung, np.zeros_like(lung), trusted, lateral_left=True) is None
    segments = {"right_lung": make_segment("right_lung", lung, trusted),
                "left_lung": make_segment("left_lung", lung[:, ::-1], trusted)}
    names = {m.name for m in side_measurements(lesion, segments, trusted)}
    assert "pneumothorax_right_collins_percent" in names
    assert "pneumothorax_right_hemithorax_percent" in names
    names = {m.name for m in side_measurements(lesion, segments, untrusted)}
    assert "pneumothorax_right_collins_percent" not in names
    assert "pneumothorax_right_hemithorax_percent" in names


def test_card_states_nih_transfer_and_size_error(measured: dict, detector) -> None:
    """The card carries the detector's AUC on every unseen NIH image labelled
    Pneumothorax and the % of hemithorax error on the SIIM test positives, as
    re-measured, and its limits say both."""
    claimed = detector.segmenter.card.evaluation
    transfer = measured["source_check"]["nih_transfer"]["pooled"]
    card_transfer = claimed["source_check"]["nih_transfer"]["pooled"]
    assert transfer["auc_vs_normal"]["n_positive"] == 28  # 19 multilabel + 9 others
    for name in ("auc_vs_normal", "auc_vs_other_abnormal"):
        assert transfer[name]["auc"] == pytest.approx(card_transfer[name]["auc"], abs=0.01)
    assert transfer["sensitivity"] == card_transfer["sensitivity"]
    size, card_size = measured["size_check"]["test"], claimed["size_check"]["test"]
    assert size["n"] == 5
    for how in ("engine", "formula_on_truth"):
        assert size[how]["signed_error"]["mean"] == pytest.approx(
            card_size[how]["signed_error"]["mean"], abs=0.5), how
    # the formula itself: on the true masks it agrees with the truth within 10 points
    assert abs(size["formula_on_truth"]["signed_error"]["mean"]) <= 10
    assert size["formula_on_truth"]["n_reported"] == 5
    limits = claimed["limits"]
    assert "unseen NIH image labelled Pneumothorax" in limits and "% of hemithorax" in limits
    assert f"AUC {card_transfer['auc_vs_normal']['auc']:.2f}" in limits


@pytest.mark.xfail(strict=True, reason="issue 12.4: the segmenter covers only part of large "
                   "pneumothoraces (SIIM test 5085: 93 % read as 11 %); reaching +-10 points "
                   "needs a retrained segmenter")
def test_reported_size_within_ten_points_on_siim_test_positives(measured: dict) -> None:
    engine = measured["size_check"]["test"]["engine"]
    assert engine["n_reported"] >= 3
    assert engine["absolute_error"]["mean"] <= 10
