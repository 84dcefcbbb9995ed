"""What a received image says about its lossy compression, completed from its own file.

Derived objects copy Lossy Image Compression from their source, and where it is "01" the
SEG's Lossy Image Compression Method and Ratio are Type 1C (PS3.3 C.8.20.2). Sources often
say "01" without one of them; when the source still carries its lossy codestream, both
are known from the file itself: the method from the transfer syntax, and the ratio "may
be a measured value (e.g., computed by dividing the uncompressed pixel data size by the
size of the compressed bit stream)" (PS3.3 C.7.6.1.1.5.2).
"""

from __future__ import annotations

import pydicom
import pydicom.encaps

# Transfer syntaxes whose codestream is (or may be) lossy, and the Defined Term of Lossy
# Image Compression Method (PS3.3 C.7.6.1.1.5.1) that names their method.
LOSSY_METHODS: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG extended
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # JPEG 2000 (lossy or lossless)
    "1.2.840.10008.1.2.4.93": "ISO_15444_1",  # JPIP JPEG 2000 (lossy or lossless)
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",  # HTJ2K (lossy or lossless)
}
ALWAYS_LOSSY = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})


def complete_lossy_compression(header: pydicom.Dataset, dataset: pydicom.Dataset) -> None:
    """Fill Lossy Image Compression, its Method and Ratio in ``header`` from ``dataset``
    (the same image with its pixel data) where the file says less than it shows.

    Nothing is changed when the image was lossy compressed earlier and now travels in
    another transfer syntax: then the method and ratio are not in the file.
    """
    syntax = str(getattr(dataset.file_meta, "TransferSyntaxUID", "") or "")
    if syntax in ALWAYS_LOSSY and "LossyImageCompression" not in header:
        header.LossyImageCompression = "01"
    if header.get("LossyImageCompression") != "01" or syntax not in LOSSY_METHODS:
        return
    if not header.get("LossyImageCompressionMethod"):
        header.LossyImageCompressionMethod = LOSSY_METHODS[syntax]
    if not header.get("LossyImageCompressionRatio"):
        ratio = _measured_ratio(dataset)
        if ratio is not None:
            header.LossyImageCompressionRatio = f"{ratio:.1f}"


def _measured_ratio(dataset: pydicom.Dataset) -> float | None:
    """Uncompressed size over the size of the (single) compressed frame."""
    try:
        frame = next(pydicom.encaps.generate_frames(dataset.PixelData, number_of_frames=1))
        uncompressed = (int(dataset.Rows) * int(dataset.Columns)
                        * int(dataset.get("SamplesPerPixel", 1))
                        * int(dataset.BitsAllocated) / 8)
    except (AttributeError, KeyError, StopIteration, TypeError, ValueError):
        return None
    return uncompressed / len(frame) if frame else None
