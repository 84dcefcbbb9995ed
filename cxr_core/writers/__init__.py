"""Turn an :class:`~cxr_core.analysis.Analysis` into what people open: DICOM results
(``dicom``: SEG, TID 1500 SR, overlay Secondary Capture), the output folder (``files``:
JSON, mask PNGs, overlay), and training labels (``labelstore``).

Writers import the vocabulary, never the engine or the stages.
"""
