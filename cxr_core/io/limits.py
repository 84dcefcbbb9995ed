"""The one set of size limits every reader applies, whatever the file format.

A chest radiograph the models can read has at least 128 px per side (they run at
224-256 px; below 128 the lungs are a few dozen pixels wide) and at most 8192 px per side
(the largest detector plates are about 43 cm at 0.05 mm, ~8600 px before any binning;
a larger image is a mosaic, a scan artefact or a decompression bomb, and would cost
gigabytes of memory to analyse).
"""

from __future__ import annotations

from cxr_core.io.errors import RefusedInput

MIN_SIDE = 128
"""Smallest accepted rows or columns, in pixels."""
MAX_SIDE = 8192
"""Largest accepted rows or columns, in pixels."""


def check_size(rows: int, columns: int) -> None:
    """Refuse an image whose sides fall outside ``MIN_SIDE..MAX_SIDE``.

    Call it with the size a header declares, before decoding any pixels.

    Raises
    ------
    RefusedInput
        With the size and the accepted range.
    """
    if min(rows, columns) < MIN_SIDE:
        problem = "too small"
    elif max(rows, columns) > MAX_SIDE:
        problem = "too large"
    else:
        return
    raise RefusedInput(f"image {rows}x{columns} px is {problem} to analyse; expected "
                       f"{MIN_SIDE}..{MAX_SIDE} px per side")
