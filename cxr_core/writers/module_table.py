"""highdicom's table of DICOM module attributes without parsing all 22 MB of it.

highdicom reads its whole module -> attributes table (``_standard/module_attribute_map.json``,
22 MB, 0.2-0.3 s to parse: the largest single cost of one ``cxr analyze`` after
``import torch``) the first time it builds a SEG or SR, to look up a few dozen of its 436
modules: those of the IODs it writes (is Content Date in it?) and the Patient/Study modules
of the source's IOD (which attributes to copy). We ship those entries, exactly as the
installed highdicom has them (:data:`SUBSET_FILE`, written by
``scripts/make_module_table.py``), and hand highdicom a table that answers from them and
reads its full file the first time it is asked about any other module: the objects
written are the same either way (``tests/test_module_table.py``). The subset is used only
with the highdicom version (and file size) it was made from.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import highdicom
from highdicom import _standard_utils

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

SUBSET_FILE = Path(__file__).with_name("highdicom_modules.json")
"""``{"highdicom": version, "source_bytes": size of its full table, "modules": {...}}``."""
WRITTEN_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
                       "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
                       "1.2.840.10008.5.1.4.1.1.7")  # Secondary Capture (the overlay)
COPIED_IES = ("Patient", "Study")
"""Information entities highdicom copies from a source of any IOD."""
COPIED_MODULES = ("specimen",)
"""Modules highdicom copies by name from a source of any IOD."""
Modules = dict[str, list[Any]]

_LOADER_NAME = "get_module_attribute_map"
_install_lock = threading.Lock()
_installed: ModuleTable | None = None


class ModuleTable(dict[str, list[Any]]):
    """highdicom's module -> attributes table, holding the shipped modules until a lookup
    needs another; then it holds all of highdicom's (and is exactly its table).

    Parameters
    ----------
    subset:
        Some of the table's entries, equal to the full table's.
    load_full:
        Returns the full table (highdicom's cached loader).
    """

    def __init__(self, subset: Modules, load_full: Callable[[], Modules]) -> None:
        super().__init__(subset)
        self._load_full = load_full
        self.complete = False
        """Whether the full table has been read."""

    def _completed(self) -> ModuleTable:
        if not self.complete:
            self.update(self._load_full())
            self.complete = True
        return self

    def __missing__(self, key: str) -> list[Any]:
        if self.complete:
            raise KeyError(key)
        return dict.__getitem__(self._completed(), key)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or (
            not self.complete and dict.__contains__(self._completed(), key))

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:  # reads the full table when the key is not shipped
            return dict.__getitem__(self, key)
        return default

    # whole-table views answer from the whole table
    def __iter__(self) -> Iterator[str]:
        return dict.__iter__(self._completed())

    def __len__(self) -> int:
        return dict.__len__(self._completed())

    def keys(self) -> dict_keys[str, list[Any]]:
        return dict.keys(self._completed())

    def values(self) -> dict_values[str, list[Any]]:
        return dict.values(self._completed())

    def items(self) -> dict_items[str, list[Any]]:
        return dict.items(self._completed())

    def __eq__(self, other: object) -> bool:
        return dict.__eq__(self._completed(), other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __repr__(self) -> str:
        return dict.__repr__(self._completed())


def full_table_bytes() -> int | None:
    """The size of the installed highdicom's full table file; None when it cannot be read
    as a file (then no subset is used)."""
    try:
        return (Path(highdicom.__file__).parent / "_standard"
                / "module_attribute_map.json").stat().st_size
    except OSError:
        return None


def subset_keys() -> list[str]:
    """The modules the shipped subset holds: every module of the IODs we read
    (:data:`~cxr_core.io.dicom_reader.ACCEPTED_SOP_CLASSES`) or write, the Patient and
    Study modules of every IOD, and the modules copied by name."""
    from cxr_core.io.dicom_reader import ACCEPTED_SOP_CLASSES

    iods = _standard_utils.get_sop_class_iod_map()
    iod_modules = _standard_utils.get_iod_module_map()
    keys = {module["key"] for sop_class in (*sorted(ACCEPTED_SOP_CLASSES), *WRITTEN_SOP_CLASSES)
            for module in iod_modules[iods[sop_class]]}
    keys |= {module["key"] for modules in iod_modules.values() for module in modules
             if module["ie"] in COPIED_IES}
    return sorted(keys | set(COPIED_MODULES))


def write_subset(path: Path = SUBSET_FILE) -> int:
    """Write the subset of the installed highdicom's full table; return its size in bytes."""
    full = highdicom_loader()()
    # one module a line: a regenerated file diffs by module
    modules = ",\n".join(f"{json.dumps(key)}:{json.dumps(full[key], separators=(',', ':'))}"
                          for key in subset_keys())
    text = (f'{{"highdicom":{json.dumps(highdicom.__version__)},'
            f'"source_bytes":{json.dumps(full_table_bytes())},\n"modules":{{\n{modules}}}}}\n')
    path.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def read_subset(path: Path = SUBSET_FILE) -> Modules | None:
    """The shipped modules, or None when they were made from another highdicom (version or
    table size) or cannot be read."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (document.get("highdicom") != highdicom.__version__
            or document.get("source_bytes") != full_table_bytes()):
        return None
    modules: Modules = document["modules"]
    return modules


def highdicom_loader() -> Callable[[], Modules]:
    """highdicom's own cached loader of its full table (also once the table is in use)."""
    loader: Callable[[], Modules] = getattr(_standard_utils, _LOADER_NAME)
    return _installed._load_full if _installed is not None else loader


def use_shipped_modules() -> ModuleTable | None:
    """Make highdicom look modules up in a :class:`ModuleTable` of the shipped subset (once;
    later calls return the same table).

    highdicom's modules bind its cached loader by name at import, so every loaded
    ``highdicom`` module that holds it is pointed at the table's. Nothing changes (None is
    returned) when the subset does not match the installed highdicom, or highdicom has
    already read its full table (then there is nothing to save).
    """
    global _installed
    with _install_lock:
        if _installed is not None:
            return _installed
        loader = getattr(_standard_utils, _LOADER_NAME)
        cache_info = getattr(loader, "cache_info", None)
        if cache_info is None or cache_info().currsize:  # not highdicom's cached loader, or
            return None  # the full table is read already
        subset = read_subset()
        if subset is None:
            return None
        table = ModuleTable(subset, loader)
        for name, module in list(sys.modules.items()):
            if ((name == "highdicom" or name.startswith("highdicom."))
                    and getattr(module, _LOADER_NAME, None) is loader):
                setattr(module, _LOADER_NAME, lambda: table)
        _installed = table
        return table
