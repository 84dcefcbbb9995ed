"""The engine's stages, run in order on every radiograph: lungs, findings, pneumothorax.

Each stage runs one model (with its card), adds to the :class:`~cxr_core.analysis.Analysis`
and may refuse the input with :class:`~cxr_core.io.RefusedInput`. Only
:mod:`cxr_core.engine` imports this package; faces use the engine.
"""
