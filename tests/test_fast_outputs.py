"""The fast output path gives what the straightforward one gave, on real images.

Heat maps are kept on the feature grid and made at source resolution only when read;
zones and the overlay tint read a subsampled grid computed from the 7x7 map. Each test
here compares that path with the former computation (every map made at source
resolution with PyTorch's resize, then subsampled), written out below as it was.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cxr_core import OUTPUT_KINDS, Analysis, build_dicom_results, read_radiograph, write_outputs
from cxr_core.explain import HeatMap
from cxr_core.padding import paste
from cxr_core.stages.findings import FindingsStage
from cxr_core.writers.outputs import DEFAULT_OUTPUTS, parse_outputs
from cxr_core.writers.overlay import render_overlay
from cxr_core.zones import finding_zones
from tests.conftest import DICOM_SAMPLES, RG1_UNCR

PADDED = next(DICOM_SAMPLES.glob("nih_gcp_*.dcm"))  # a frame is cropped and pasted back
TIMESTAMPS = {"ContentTime", "ContentDate", "InstanceCreationTime", "InstanceCreationDate",
              "ContributionDateTime"}


@pytest.fixture(scope="module")
def analyses(engine) -> dict[str, Analysis]:  # noqa: ANN001
    cases = {"2k CR": engine.analyze(read_radiograph(RG1_UNCR)),
             "padded": engine.analyze(read_radiograph(PADDED))}
    radiograph = read_radiograph(RG1_UNCR)  # the same image, declared mirrored
    cases["mirrored"] = engine.analyze(dataclasses.replace(
        radiograph, pixels=np.ascontiguousarray(radiograph.pixels[:, ::-1]), mirrored=True))
    return cases


def former_heatmap(engine, analysis: Analysis, name: str) -> np.ndarray:  # noqa: ANN001
    """The map as the engine made it before: the CAM resized to the analysed image with
    F.interpolate, scaled by its own extremes, flipped back, pasted into the frame."""
    finding = next(f for f in analysis.findings if f.name == name)
    heat = finding.heat
    assert isinstance(heat, HeatMap)
    stage = engine.stage("findings")
    assert isinstance(stage, FindingsStage)
    classifier = stage.classifier
    index = classifier.card.labels.index(name)
    weights = classifier.heatmap.weights[index].detach().float()
    radiograph = analysis.radiograph
    lungs = np.zeros(radiograph.shape, bool)
    for segment in ("right_lung", "left_lung"):
        lungs |= analysis.segments[segment].mask
    box = heat.box
    pixels = radiograph.pixels if box is None else _conditioned(radiograph.pixels)
    lungs = lungs if box is None else lungs[box]
    if heat.mirrored:
        pixels, lungs = pixels[:, ::-1], lungs[:, ::-1]
    forward = classifier.heatmap.forward(classifier.input(pixels, lungs))
    with torch.inference_mode():
        cam = torch.relu(torch.einsum("k,khw->hw", weights, forward.activations))
        full = F.interpolate(cam[None, None], size=pixels.shape, mode="bilinear",
                             align_corners=False)[0, 0]
    low, high = float(full.min()), float(full.max())
    heatmap = ((full - low) / max(high - low, 1e-8)).numpy().astype(np.float32)
    heatmap = np.ascontiguousarray(heatmap[:, ::-1]) if heat.mirrored else heatmap
    return paste(heatmap, box, radiograph.shape)


def _conditioned(pixels: np.ndarray) -> np.ndarray:
    from cxr_core.padding import condition

    conditioned, _ = condition(pixels)
    return conditioned


def positives(analysis: Analysis) -> list[str]:
    return [f.name for f in analysis.findings if f.positive and f.heat is not None]


@pytest.mark.parametrize("case", ["2k CR", "padded", "mirrored"])
def test_heat_maps_at_source_resolution_are_the_former_ones(engine, analyses,  # noqa: ANN001
                                                            case: str) -> None:
    analysis = analyses[case]
    names = positives(analysis)
    assert names, "the case needs a positive finding to test its map"
    if case == "padded":
        assert any(isinstance(f.heat, HeatMap) and f.heat.box for f in analysis.findings)
    for name in names[:3]:
        finding = next(f for f in analysis.findings if f.name == name)
        assert np.array_equal(finding.heatmap, former_heatmap(engine, analysis, name)), name


@pytest.mark.parametrize("case", ["2k CR", "padded", "mirrored"])
def test_subsampled_maps_and_zones_match_the_full_maps(analyses, case: str) -> None:  # noqa: ANN001
    analysis = analyses[case]
    lungs = {name: segment.mask for name, segment in analysis.segments.items()}
    for finding in analysis.findings:
        if not isinstance(finding.heat, HeatMap):
            continue
        lazy = dataclasses.replace(finding.heat, _cache={})  # nothing made yet
        zones = finding_zones(lazy, lungs)
        assert "full" not in lazy._cache  # zones came from the 7x7 map
        full = lazy.full()
        for step in (1, 2, 4, 7):
            sampled = dataclasses.replace(lazy, _cache={})[::step, ::step]
            assert sampled.shape == full[::step, ::step].shape
            assert np.abs(sampled - full[::step, ::step]).max() <= 1e-6, (finding.name, step)
        former = finding_zones(full, lungs)
        for ours in (zones, finding.zones):  # the same zones, shares to float rounding
            assert [(z.side, z.level) for z in ours] == [(z.side, z.level) for z in former]
            assert [z.share for z in ours] == pytest.approx([z.share for z in former],
                                                            abs=1e-6), finding.name


def test_overlay_is_pixel_identical_to_one_drawn_from_full_maps(analyses) -> None:  # noqa: ANN001
    for case, analysis in analyses.items():
        assert positives(analysis)
        full = dataclasses.replace(analysis, findings=[
            dataclasses.replace(f, heatmap=f.heatmap) for f in analysis.findings])
        assert all(f.heat is None or isinstance(f.heat, np.ndarray) for f in full.findings)
        lazy = dataclasses.replace(analysis, findings=[
            dataclasses.replace(f, heatmap=dataclasses.replace(f.heat, _cache={}))
            if isinstance(f.heat, HeatMap) else f for f in analysis.findings])
        assert np.array_equal(render_overlay(lazy), render_overlay(full)), case


def test_written_files_hold_the_former_pixels_and_dicom(analyses, tmp_path: Path) -> None:  # noqa: ANN001
    analysis = analyses["2k CR"]
    written = write_outputs(analysis, tmp_path, OUTPUT_KINDS)
    for name, segment in analysis.segments.items():
        stored = np.asarray(Image.open(written.files[f"mask:{name}"]))
        assert np.array_equal(stored, segment.mask.astype(np.uint8) * 255), name
    for finding in analysis.findings:
        if finding.heat is not None:
            stored = np.asarray(Image.open(written.files[f"heatmap:{finding.name}"]))
            assert np.array_equal(stored, np.round(finding.heatmap * 255).astype(np.uint8))
    assert np.array_equal(np.asarray(Image.open(written.files["overlay"])),
                          render_overlay(analysis))
    # DICOM: the same objects as from an analysis whose maps were all made up front
    full = dataclasses.replace(analysis, findings=[
        dataclasses.replace(f, heatmap=f.heatmap) for f in analysis.findings])
    expected = build_dicom_results(full.radiograph.source_dataset, full)
    for kind, dataset in expected.items():
        assert _content(pydicom.dcmread(written.files[kind])) == _content(dataset), kind


def _content(dataset: pydicom.Dataset) -> list[tuple[str, object]]:
    """Every element, nested ones included, but the creation times."""
    items: list[tuple[str, object]] = []
    for element in dataset.iterall():
        if element.keyword not in TIMESTAMPS and element.VR != "SQ":
            items.append((element.keyword or str(element.tag), element.value))
    return items


def test_default_outputs_leave_heat_maps_unmade(analyses, tmp_path: Path) -> None:  # noqa: ANN001
    analysis = analyses["2k CR"]
    lazy = dataclasses.replace(analysis, findings=[
        dataclasses.replace(f, heatmap=dataclasses.replace(f.heat, _cache={}))
        if isinstance(f.heat, HeatMap) else f for f in analysis.findings])
    written = write_outputs(lazy, tmp_path)
    assert sorted(p.name for p in written.folder.iterdir()) == [
        "analysis.json", "masks", "overlay.png", "seg.dcm", "sr.dcm"]
    maps = [f.heat for f in lazy.findings if isinstance(f.heat, HeatMap)]
    assert maps and all("full" not in heat._cache for heat in maps)


def test_outputs_are_parsed_and_bad_ones_refused(tmp_path: Path) -> None:
    assert parse_outputs("seg, json") == ("json", "seg")
    assert parse_outputs("all") == OUTPUT_KINDS
    assert parse_outputs("default") == DEFAULT_OUTPUTS
    for bad in ("", "json,pictures"):
        with pytest.raises(ValueError, match="outputs: unknown"):
            parse_outputs(bad)
    result = subprocess.run(
        [sys.executable, "-m", "cxr_core.cli", "analyze", str(RG1_UNCR), "--out",
         str(tmp_path), "--outputs", "json,pictures"], capture_output=True, text=True,
        check=False, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cxr analyze: outputs: unknown pictures; choose from json, masks, overlay, heatmaps, "
        "seg, sr, heatmap_seg, or all"]
    assert not any(tmp_path.iterdir())


def test_command_writes_only_the_outputs_asked(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cxr_core.cli", "analyze", str(RG1_UNCR), "--out",
         str(tmp_path), "--outputs", "json,heatmaps,heatmap_seg"], capture_output=True,
        text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "RG1_UNCR"
    assert sorted(p.name for p in folder.iterdir()) == [
        "analysis.json", "heatmap_seg.dcm", "heatmaps"]
    assert any((folder / "heatmaps").iterdir())


def test_seg_planes_give_the_former_segment_interleaved_seg(analyses, monkeypatch) -> None:  # noqa: ANN001
    import cxr_core.writers.seg as seg_module

    analysis = analyses["2k CR"]
    source = analysis.radiograph.source_dataset
    ours = build_dicom_results(source, analysis)
    monkeypatch.setattr(seg_module, "segments_last",  # the former layout: a C-ordered copy
                        lambda planes: np.stack(list(planes), axis=-1)[None])
    former = build_dicom_results(source, analysis)
    assert ours.seg.PixelData == former.seg.PixelData
    assert _content(ours.seg) == _content(former.seg)


def former_input(pixels: np.ndarray, size: tuple[int, int], method: str) -> torch.Tensor:
    """A model input as :class:`~cxr_core.preprocess.ToModelInput` made it before it
    shared one scaled image between the models."""
    from cxr_core.preprocess import EQUALIZE, PERCENTILES, equalize

    step = max(1, min(pixels.shape) // 512)
    low, high = np.percentile(pixels[::step, ::step], PERCENTILES)
    scale = float(high - low) or 1.0
    tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    tensor = ((tensor - float(low)) / scale).clamp_(0.0, 1.0)
    tensor = F.interpolate(tensor, size=size, mode="bilinear", antialias=True,
                           align_corners=False)
    return equalize(tensor) if method == EQUALIZE else tensor


def test_models_share_one_scaled_image_with_the_former_values(engine) -> None:  # noqa: ANN001
    from cxr_core.preprocess import EQUALIZE, PERCENTILE, ToModelInput, read_only

    pixels = read_radiograph(RG1_UNCR).pixels
    shared = read_only(pixels)
    assert pixels.flags.writeable  # the caller's array is left as it was
    for size, method in (((128, 128), PERCENTILE), ((256, 256), PERCENTILE),
                         ((224, 224), EQUALIZE), ((256, 256), PERCENTILE)):
        expected = former_input(pixels, size, method)
        for image in (shared, pixels):  # shared (read-only) and scaled each time (writable)
            ours = ToModelInput(size, method=method)(image)
            assert torch.equal(ours, expected), (size, method)
        ours.mul_(0)  # a caller changing its input must not change the shared one
        assert torch.equal(ToModelInput(size, method=method)(shared), expected)


@pytest.mark.parametrize("mirrored", [False, True])
def test_masks_resized_channel_by_channel_are_the_former_ones(engine, mirrored: bool) -> None:  # noqa: ANN001
    from cxr_core.preprocess import resize_probabilities
    from cxr_core.segmentation import THRESHOLD

    segmenter = engine.stage("lungs").segmenter
    pixels = read_radiograph(RG1_UNCR).pixels
    output = segmenter(pixels, mirrored=mirrored)
    view = pixels[:, ::-1] if mirrored else pixels
    cleaned = segmenter._clean(segmenter.probabilities(view))
    former = resize_probabilities(cleaned[None], view.shape)[0].numpy() > THRESHOLD
    former = former[:, :, ::-1] if mirrored else former
    for index, name in enumerate(segmenter.card.labels):
        assert output.masks[name].flags.c_contiguous
        assert np.array_equal(output.masks[name], former[index]), name
