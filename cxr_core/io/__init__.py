"""Reading what faces hand the engine: radiographs (DICOM, PNG, JPEG...) into
:class:`~cxr_core.radiograph.Radiograph` objects, our own SEG back into masks and our own
SR into its measurements; or refusing them with a one-line reason."""

from cxr_core.io.errors import RefusedInput
from cxr_core.io.reader import expand_inputs, read_radiograph

__all__ = ["RefusedInput", "expand_inputs", "read_radiograph"]
