"""One entry point for every input file, whatever its format."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cxr_core.io.dicom_reader import is_legacy_dicom, read_dicom_radiograph
from cxr_core.io.errors import RefusedInput
from cxr_core.io.image_reader import IMAGE_SUFFIXES, read_image_radiograph
from cxr_core.radiograph import Radiograph

DICOM_MAGIC_OFFSET = 128


def looks_like_dicom(path: Path) -> bool:
    """True for a ``.dcm`` name, a Part 10 file (``DICM`` at byte 128), or a legacy file
    without preamble and File Meta that parses as a DICOM dataset (see
    :func:`~cxr_core.io.dicom_reader.is_legacy_dicom`: only for names without a suffix or
    with a DICOM one, so other files in a folder are never parsed)."""
    if path.suffix.lower() in {".dcm", ".dicom"}:
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(DICOM_MAGIC_OFFSET)
            if handle.read(4) == b"DICM":
                return True
    except OSError:
        return False
    return is_legacy_dicom(path)


def read_radiograph(path: Path | str, *, radiograph_id: str | None = None) -> Radiograph:
    """Read a DICOM or image file; raise :class:`RefusedInput` with a reason otherwise."""
    path = Path(path)
    if not path.is_file():
        raise RefusedInput(f"no such file: {path.name}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image_radiograph(path, radiograph_id=radiograph_id)
    if looks_like_dicom(path):
        return read_dicom_radiograph(path, radiograph_id=radiograph_id)
    raise RefusedInput(f"unsupported file type {path.suffix or '(no suffix)'}")


def expand_inputs(inputs: Iterable[Path | str]) -> list[Path]:
    """Files as given, and the files of folders (recursively, sorted, hidden skipped)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(
                p
                for p in sorted(item.rglob("*"))
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(item).parts)
                and (p.suffix.lower() in IMAGE_SUFFIXES or looks_like_dicom(p))
            )
        else:
            files.append(item)
    return files
