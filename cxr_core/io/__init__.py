"""Turn files into :class:`~cxr_core.radiograph.Radiograph` objects, or refuse them."""

from cxr_core.io.errors import RefusedInput
from cxr_core.io.reader import expand_inputs, read_radiograph

__all__ = ["RefusedInput", "expand_inputs", "read_radiograph"]
