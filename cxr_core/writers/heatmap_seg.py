"""The positive findings' heat maps as a FRACTIONAL DICOM-SEG, which PACS viewers overlay.

One segment per positive finding that has a heat map (its class activation map,
:mod:`cxr_core.explain`): Segmentation Type FRACTIONAL, Segmentation Fractional Type
PROBABILITY, stored 0..255 (Maximum Fractional Value 255) at the source's resolution.
The segment's property type is the finding's code, its category Morphologically abnormal
structure, its algorithm the findings model that made the finding.

The map says where the model looked, scaled 0..1 on its own; it is not a calibrated
per-pixel probability (the finding's probability, in the SR, is). PROBABILITY is still the
closer of the two fractional types PS3.3 C.8.20.2.3 defines: OCCUPANCY would claim the
fraction of each pixel the finding fills.

Same encoding as the binary SEG (:func:`~cxr_core.writers.seg.radiograph_segmentation`):
no plane geometry without a Frame of Reference, UIDs derived from the source, its digest,
the models and a tag of its own, so it never shares a UID with the binary SEG.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom

from cxr_core.analysis import Finding
from cxr_core.radiograph import PixelSpacing
from cxr_core.terminology import MORPHOLOGICALLY_ABNORMAL
from cxr_core.writers.derivation import derived_uid, source_digest, source_for_derivation
from cxr_core.writers.identity import HEATMAP_SEG_SERIES_NUMBER
from cxr_core.writers.seg import (
    algorithm_identification,
    credited_model,
    radiograph_segmentation,
    segments_last,
)

HEATMAP_TAG = "heatmap-seg"
"""Hashed into every UID of the heat-map SEG, beside what the binary SEG's derive from."""


def mapped_findings(findings: Sequence[Finding]) -> list[Finding]:
    """The positive findings that have a heat map, in the analysis' order."""
    return [f for f in findings if f.positive and f.heat is not None]


def build_heatmap_seg(
    source: pydicom.Dataset,
    findings: Sequence[Finding],
    *,
    spacing: PixelSpacing,
    algorithm: str,
    digest: str | None = None,
    series_number: int = HEATMAP_SEG_SERIES_NUMBER,
) -> hd.seg.Segmentation:
    """A FRACTIONAL (PROBABILITY) SEG of the heat maps of the positive ``findings``.

    Parameters
    ----------
    source:
        The source image's header (pixel data not needed).
    findings:
        The analysis' findings; those that are positive with a heat map become segments.
    spacing:
        The source's pixel spacing as the reader took it.
    algorithm:
        ``name@version`` of every model of the analysis, comma-separated: hashed into
        the UIDs.
    digest:
        :func:`~cxr_core.writers.derivation.source_digest` of the source (header and
        pixels); without it, a digest of the header alone.
    series_number:
        The SEG's series number.

    Raises
    ------
    ValueError
        When no finding is positive with a heat map, or a map is not the source's size.
    """
    source = source_for_derivation(source, spacing)
    mapped = mapped_findings(findings)
    if not mapped:
        raise ValueError("findings: none is positive with a heat map")
    basis = (str(source.SOPInstanceUID), digest or source_digest(source), algorithm,
             HEATMAP_TAG)
    descriptions = [_description(number, finding, finding.model_id or credited_model(algorithm),
                                 basis) for number, finding in enumerate(mapped, start=1)]
    pixel_array = segments_last(np.stack([_checked_map(f, source) for f in mapped]))
    return radiograph_segmentation(
        source, pixel_array, descriptions, basis=basis, series_number=series_number,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        model_name="SlicerCXR findings heat maps", content_label="HEATMAPS",
        content_description="Where the findings model looked (class activation maps)")


def _checked_map(finding: Finding, source: pydicom.Dataset) -> np.ndarray:
    """The finding's map as float32 in 0..1, checked to be the source's size."""
    assert finding.heatmap is not None  # mapped_findings keeps only those with one
    shape = (int(source.Rows), int(source.Columns))
    if finding.heatmap.shape != shape:
        raise ValueError(f"findings: the {finding.name} heat map is "
                         f"{finding.heatmap.shape}, the source {shape}")
    return np.clip(finding.heatmap.astype(np.float32), 0.0, 1.0)


def _description(number: int, finding: Finding, model: str,
                 basis: Sequence[str]) -> hd.seg.SegmentDescription:
    """Segment ``number``: the finding's code, the ``model`` (``name@version``) that made
    the finding, and a Tracking UID of this finding's map in this analysis of this source."""
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=f"{finding.code.meaning} heat map"[:64],
        segmented_property_category=MORPHOLOGICALLY_ABNORMAL,
        segmented_property_type=finding.code,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification(model),
        tracking_uid=derived_uid(basis, "tracking", finding.name, model),
        tracking_id=f"{finding.name} heat map",
    )
