"""``python -m cxr_core.cli``: the ``cxr`` command (Slicer launches training this way)."""

import sys

from cxr_core.cli import main

sys.exit(main())
