"""Per-image output folder: analysis.json, masks/*.png, heatmaps/*.png, overlay.png,
seg.dcm, sr.dcm."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cxr_core.analysis import Analysis
from cxr_core.pipeline import timed_call
from cxr_core.segments import SEGMENT_TYPES
from cxr_core.writers.overlay import heatmap_rgb, overlay_rgb
from cxr_core.writers.seg import build_seg
from cxr_core.writers.sr import build_sr


@dataclass
class WrittenOutputs:
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)


def safe_folder_name(name: str) -> str:
    """A file-system-safe folder name (received names are untrusted)."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip("._")
    return cleaned[:120] or "image"


def write_outputs(analysis: Analysis, out_dir: Path) -> WrittenOutputs:
    """Write every output for one analysis into ``out_dir/<id>/``."""
    folder = out_dir / safe_folder_name(analysis.radiograph.id)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    written = WrittenOutputs(folder)
    for name, segment in analysis.segments.items():
        path = folder / "masks" / f"{name}.png"
        Image.fromarray(segment.mask.astype(np.uint8) * 255).save(path, optimize=False)
        written.files[f"mask:{name}"] = path
    written.files["overlay"] = folder / "overlay.png"
    Image.fromarray(render_overlay(analysis)).save(written.files["overlay"])
    written.files |= _write_heatmaps(analysis, folder)
    if analysis.radiograph.is_dicom:
        seg = timed_call(analysis.timings, "seg", build_seg, analysis)
        seg.save_as(folder / "seg.dcm", enforce_file_format=True)
        sr = timed_call(analysis.timings, "sr", build_sr, analysis, seg=seg)
        sr.save_as(folder / "sr.dcm", enforce_file_format=True)
        written.files["seg"], written.files["sr"] = folder / "seg.dcm", folder / "sr.dcm"
    written.files["json"] = folder / "analysis.json"
    written.files["json"].write_text(json.dumps(analysis.summary(), indent=2) + "\n")
    return written


def render_overlay(analysis: Analysis, max_side: int = 1024) -> np.ndarray:
    """RGB overlay of every segment over the radiograph, at most ``max_side`` pixels."""
    pixels = analysis.radiograph.pixels
    step = max(1, int(np.ceil(max(pixels.shape) / max_side)))
    masks = {n: s.mask[::step, ::step] for n, s in analysis.segments.items()}
    colors = {n: SEGMENT_TYPES[n].rgb for n in masks if n in SEGMENT_TYPES}
    heat = [f.heatmap[::step, ::step] for f in analysis.findings
            if f.positive and f.heatmap is not None]
    base = overlay_rgb(pixels[::step, ::step], {}, {})
    # heat first, masks and outlines on top: the maps are broad, the masks must stay readable
    if heat:
        base = heatmap_rgb(base, np.maximum.reduce(heat), floor=0.5)
    rgb = overlay_rgb(base, masks, colors)
    return _draw_legend(rgb, analysis)


def _legend_lines(analysis: Analysis) -> list[tuple[str, tuple[int, int, int]]]:
    """Segment names in their colours, then findings and flags in white."""
    white = (255, 255, 255)
    lines = [(SEGMENT_TYPES[n].label, SEGMENT_TYPES[n].rgb)
             for n, s in analysis.segments.items() if n in SEGMENT_TYPES and s.pixel_count]
    lines += [(f"{f.name}: {f.probability:.2f} ({'positive' if f.positive else 'negative'})",
               white) for f in analysis.findings]
    ratio = analysis.measurement("cardiothoracic_ratio")
    if ratio is not None:
        lines.append((f"cardiothoracic ratio {ratio.value:.2f}", white))
    lines += [(f"! {flag}", (255, 96, 96)) for flag in analysis.quality_flags]
    return lines


def _draw_legend(rgb: np.ndarray, analysis: Analysis) -> np.ndarray:
    """A boxed legend in the top-left corner, so the picture explains itself."""
    from PIL import ImageDraw, ImageFont

    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, image.width // 60))
    lines = _legend_lines(analysis) + [("AI output, not verified", (200, 200, 200))]
    height = font.size + 4
    width = max(draw.textlength(text, font=font) for text, _ in lines) + 12
    draw.rectangle([0, 0, width, height * len(lines) + 6], fill=(0, 0, 0))
    for row, (text, color) in enumerate(lines):
        draw.text((6, 4 + row * height), text, fill=color, font=font)
    return np.asarray(image)


def _write_heatmaps(analysis: Analysis, folder: Path) -> dict[str, Path]:
    """Each finding's heat map as an 8-bit gray PNG at source resolution (255 = hottest);
    grayscale so viewers and Slicer can load it as a map, the overlay shows it in colour."""
    written = {}
    for finding in analysis.findings:
        if finding.heatmap is None:
            continue
        path = folder / "heatmaps" / f"{safe_folder_name(finding.name)}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.round(finding.heatmap * 255).astype(np.uint8)).save(path)
        written[f"heatmap:{finding.name}"] = path
    return written
