"""The files ``cxr analyze`` can write for each image, and which by default (no imports
beyond the standard library: the command parses ``--outputs`` before loading anything)."""

from __future__ import annotations

OUTPUT_KINDS = ("json", "masks", "overlay", "heatmaps", "seg", "sr", "heatmap_seg")
"""What :func:`~cxr_core.writers.files.write_outputs` can write: ``analysis.json``, ``masks/*.png``,
``overlay.png``, ``heatmaps/*.png``, and for a DICOM source ``seg.dcm``, ``sr.dcm`` and
``heatmap_seg.dcm`` (when a finding is positive)."""
DEFAULT_OUTPUTS = ("json", "masks", "overlay", "seg", "sr")
"""What is written unless asked otherwise: the heat maps at source resolution (PNGs and
their SEG) cost more than the rest together on a 2k image with positive findings, so
they are written when asked; the overlay shows the positive findings' heat anyway."""


def parse_outputs(text: str) -> tuple[str, ...]:
    """``json,masks,seg`` (or ``all``, or ``default``) -> the output kinds, in
    :data:`OUTPUT_KINDS` order.

    Raises
    ------
    ValueError
        Naming the unknown kinds, when there are any or none is given.
    """
    names = {name.strip() for name in text.split(",") if name.strip()}
    if names == {"all"}:
        return OUTPUT_KINDS
    if names == {"default"}:
        return DEFAULT_OUTPUTS
    unknown = sorted(names - set(OUTPUT_KINDS))
    if unknown or not names:
        raise ValueError(f"outputs: unknown {', '.join(unknown) or 'none given'}; "
                         f"choose from {', '.join(OUTPUT_KINDS)}, or all")
    return tuple(kind for kind in OUTPUT_KINDS if kind in names)
