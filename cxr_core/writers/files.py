"""Per-image output folder: analysis.json, masks/*.png, overlay.png, seg.dcm, sr.dcm and,
when asked, heatmaps/*.png and (when a finding is positive) heatmap_seg.dcm."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr_core.analysis import Analysis
from cxr_core.timing import timed
from cxr_core.writers.dicom import DicomOptions, build_dicom_results
from cxr_core.writers.outputs import DEFAULT_OUTPUTS, OUTPUT_KINDS
from cxr_core.writers.overlay import render_overlay
from cxr_core.writers.png import write_png


@dataclass
class WrittenOutputs:
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)


def safe_folder_name(name: str) -> str:
    """A file-system-safe folder name (received names are untrusted)."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip("._")
    return cleaned[:120] or "image"


def write_outputs(analysis: Analysis, out_dir: Path,
                  outputs: Collection[str] = DEFAULT_OUTPUTS) -> WrittenOutputs:
    """Write the ``outputs`` (:data:`OUTPUT_KINDS`) of one analysis into ``out_dir/<id>/``.

    The time taken to build the DICOM results is recorded in the analysis' timings
    (``dicom``) before ``analysis.json`` is written.
    """
    unknown = set(outputs) - set(OUTPUT_KINDS)
    if unknown:
        raise ValueError(f"outputs: unknown {sorted(unknown)}; known: {OUTPUT_KINDS}")
    folder = out_dir / safe_folder_name(analysis.radiograph.id)
    folder.mkdir(parents=True, exist_ok=True)
    written = WrittenOutputs(folder)
    if "masks" in outputs:
        written.files |= _write_masks(analysis, folder)
    if "overlay" in outputs:
        written.files["overlay"] = folder / "overlay.png"
        write_png(render_overlay(analysis), written.files["overlay"])
    if "heatmaps" in outputs:
        written.files |= _write_heatmaps(analysis, folder)
    written.files |= _write_dicom(analysis, folder, outputs)
    if "json" in outputs:
        written.files["json"] = folder / "analysis.json"
        written.files["json"].write_text(json.dumps(analysis.summary(), indent=2) + "\n")
    return written


def _write_masks(analysis: Analysis, folder: Path) -> dict[str, Path]:
    """Each segment as an 8-bit PNG at source resolution, 0 or 255."""
    (folder / "masks").mkdir(exist_ok=True)
    written = {}
    for name, segment in analysis.segments.items():
        path = folder / "masks" / f"{name}.png"
        write_png(segment.mask.astype(np.uint8) * 255, path)
        written[f"mask:{name}"] = path
    return written


def _write_dicom(analysis: Analysis, folder: Path, outputs: Collection[str]) -> dict[str, Path]:
    """The DICOM results among ``outputs``, for a DICOM source (none otherwise)."""
    source = analysis.radiograph.source_dataset
    kinds = {"seg", "sr", "heatmap_seg"} & set(outputs)
    if source is None or not kinds:
        return {}
    with timed(analysis.timings, "dicom"):
        results = build_dicom_results(source, analysis,
                                      DicomOptions(heatmaps="heatmap_seg" in kinds))
    written = {}
    for kind, dataset in results.items():
        if kind in kinds:
            written[kind] = folder / f"{kind}.dcm"
            dataset.save_as(written[kind], enforce_file_format=True)
    return written


def _write_heatmaps(analysis: Analysis, folder: Path) -> dict[str, Path]:
    """Each finding's heat map as an 8-bit gray PNG at source resolution (255 = hottest);
    grayscale so viewers and Slicer can load it as a map, the overlay shows it in colour."""
    written = {}
    for finding in analysis.findings:
        if finding.heat is None:
            continue
        heatmap = finding.heatmap
        assert heatmap is not None  # it has a map: reading it makes it at full size
        path = folder / "heatmaps" / f"{safe_folder_name(finding.name)}.png"
        path.parent.mkdir(exist_ok=True)
        write_png(np.round(heatmap * 255).astype(np.uint8), path)
        written[f"heatmap:{finding.name}"] = path
    return written
