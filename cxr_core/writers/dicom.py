"""The one writer of DICOM results: an analysis of a DICOM image becomes a SEG, a TID 1500
SR that cites it, a FRACTIONAL SEG of the positive findings' heat maps (when one is
positive), and optionally an overlay Secondary Capture. The CLI and the node both
call :func:`build_dicom_results`."""

from __future__ import annotations

from dataclasses import dataclass

import pydicom

from cxr_core.analysis import Analysis
from cxr_core.writers.derivation import result_digest, source_digest
from cxr_core.writers.heatmap_seg import build_heatmap_seg, mapped_findings
from cxr_core.writers.identity import MANUFACTURER
from cxr_core.writers.overlay_sc import build_overlay_sc
from cxr_core.writers.seg import build_seg
from cxr_core.writers.sr import build_sr


@dataclass(frozen=True, kw_only=True)
class DicomOptions:
    """Which DICOM results to make."""

    overlay: bool = False
    """Also an RGB Secondary Capture of the overlay, for viewers that cannot show a SEG."""
    heatmaps: bool = True
    """Also a FRACTIONAL SEG of the positive findings' heat maps (when any is positive)."""


@dataclass
class DicomResults:
    """The DICOM objects made from one analysis."""

    seg: pydicom.Dataset
    sr: pydicom.Dataset
    overlay: pydicom.Dataset | None = None
    heatmap_seg: pydicom.Dataset | None = None
    """The positive findings' heat maps (FRACTIONAL SEG); None when none is positive."""

    def items(self) -> list[tuple[str, pydicom.Dataset]]:
        """``(kind, dataset)`` for each object made: ``seg``, ``sr``, then ``heatmap_seg``
        and ``overlay`` when made."""
        optional = [("heatmap_seg", self.heatmap_seg), ("overlay", self.overlay)]
        return [("seg", self.seg), ("sr", self.sr),
                *((kind, dataset) for kind, dataset in optional if dataset is not None)]


def build_dicom_results(source: pydicom.Dataset, analysis: Analysis,
                        options: DicomOptions = DicomOptions()) -> DicomResults:
    """SEG, SR (citing the SEG), the heat-map SEG (when a finding is positive) and, if
    asked, the overlay SC for the ``source`` image.

    Parameters
    ----------
    source:
        The analysed image's DICOM header (``analysis.radiograph.source_dataset``).
    analysis:
        What the engine found in it.
    options:
        Which objects to make.
    """
    if source is None:
        raise ValueError("source: DICOM results need the DICOM source image's header")
    masks = {name: segment.mask for name, segment in analysis.segments.items()}
    # the UIDs hash the source's content, not only its SOP Instance UID: two different
    # images that share one (a re-labelled copy) must not yield one SEG/SR UID
    digest = source_digest(source, analysis.radiograph.pixels) + result_digest(
        masks, [(f.name, f.probability, f.positive) for f in analysis.findings],
        [(m.name, m.value) for m in analysis.measurements])
    seg = build_seg(source, masks, spacing=analysis.radiograph.spacing,
                    algorithm=analysis.algorithm or MANUFACTURER,
                    segment_algorithms={name: segment.model_id for name, segment
                                        in analysis.segments.items() if segment.model_id},
                    digest=digest)
    sr = build_sr(source, analysis, seg=seg, entropy=(digest,))
    heatmap_seg = (build_heatmap_seg(source, analysis.findings,
                                     spacing=analysis.radiograph.spacing,
                                     algorithm=analysis.algorithm or MANUFACTURER, digest=digest)
                   if options.heatmaps and mapped_findings(analysis.findings) else None)
    overlay = build_overlay_sc(source, analysis, digest=digest) if options.overlay else None
    return DicomResults(seg=seg, sr=sr, overlay=overlay, heatmap_seg=heatmap_seg)
