"""Per-image output folder: analysis.json, masks/*.png, heatmaps/*.png, overlay.png,
seg.dcm, sr.dcm and, when a finding is positive, heatmap_seg.dcm."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cxr_core.analysis import Analysis
from cxr_core.timing import timed
from cxr_core.writers.dicom import build_dicom_results
from cxr_core.writers.overlay import render_overlay


@dataclass
class WrittenOutputs:
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)


def safe_folder_name(name: str) -> str:
    """A file-system-safe folder name (received names are untrusted)."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip("._")
    return cleaned[:120] or "image"


def write_outputs(analysis: Analysis, out_dir: Path) -> WrittenOutputs:
    """Write every output for one analysis into ``out_dir/<id>/``.

    The time taken to build the DICOM results is recorded in the analysis' timings
    (``dicom``) before ``analysis.json`` is written.
    """
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
    source = analysis.radiograph.source_dataset
    if source is not None:
        with timed(analysis.timings, "dicom"):
            results = build_dicom_results(source, analysis)
        for kind, dataset in results.items():
            written.files[kind] = folder / f"{kind}.dcm"
            dataset.save_as(written.files[kind], enforce_file_format=True)
    written.files["json"] = folder / "analysis.json"
    written.files["json"].write_text(json.dumps(analysis.summary(), indent=2) + "\n")
    return written


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
