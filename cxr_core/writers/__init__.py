"""Turn an :class:`~cxr_core.analysis.Analysis` into files: SEG, SR, overlay, JSON, masks."""
