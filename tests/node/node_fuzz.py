"""A seeded generator of malformed and hostile inputs for the fuzz suite (issue 14 item 9).

Each case is a Part 10 file sent byte-exact (its dataset bytes as they are) and the set
of fates it may end in: ``store`` (a C-STORE failure with an ErrorComment), or the state
the node gives it after acknowledging it (``refused`` in quarantine, ``ignored``,
``processed``). ``failed`` is never allowed. Categories: bit flips, element lengths,
VR codes, truncation, codestream lies, memory bombs, deep nesting, hostile strings,
non-chest objects. The seed is fixed, so CI sends the same corpus every run.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import split_dataset

from tests.node.node_bombs import build_bombs
from tests.node.node_helpers import DX_NIH, SC_JPEG
from tests.node.node_malformed import fresh_copy

SEED = 20261129
ANY_FATE = frozenset({"store", "refused", "ignored", "processed"})
NOT_ANALYSED = frozenset({"store", "refused", "ignored"})
LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT",
            b"SV", b"UV"}


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    fates: frozenset[str]


def _explicit(folder: Path, name: str, source: Path = DX_NIH) -> tuple[bytes, bytes]:
    """A fresh copy in explicit VR little endian: (file meta part, dataset bytes)."""
    dataset = fresh_copy(source)
    if not dataset.file_meta.TransferSyntaxUID.is_compressed:
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"{name}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    start = split_dataset(path)[1]
    return data[:start], data[start:]


def _elements(body: bytes) -> Iterator[tuple[int, int]]:
    """(offset, header size) of each top-level element up to PixelData (explicit LE)."""
    at = 0
    while at + 8 <= len(body):
        group, _ = struct.unpack_from("<HH", body, at)
        if group == 0x7FE0:
            return
        vr = body[at + 4:at + 6]
        if vr in LONG_VRS:
            length, size = struct.unpack_from("<I", body, at + 8)[0], 12
        else:
            length, size = struct.unpack_from("<H", body, at + 6)[0], 8
        if length == 0xFFFFFFFF:
            return
        yield at, size
        at += size + length


def _write(folder: Path, name: str, meta: bytes, body: bytes) -> Path:
    path = folder / f"{name}.dcm"
    path.write_bytes(meta + body)
    return path


def _mutations(folder: Path, rng: random.Random) -> Iterator[Case]:
    for i in range(30):  # bit flips in the header part of the dataset
        meta, body = _explicit(folder, f"flip_{i}")
        data = bytearray(body)
        header_end = data.find(b"\xe0\x7f\x10\x00")
        for _ in range(rng.randint(1, 40)):
            data[rng.randrange(header_end)] ^= 1 << rng.randrange(8)
        yield Case(f"flip_{i}", _write(folder, f"flip_{i}", meta, bytes(data)), ANY_FATE)
    for i in range(20):  # an element length replaced by a random one
        meta, body = _explicit(folder, f"length_{i}")
        at, size = rng.choice(list(_elements(body)))
        data = bytearray(body)
        if size == 12:
            data[at + 8:at + 12] = struct.pack("<I", rng.choice(
                [0xFFFFFFF0, 0x7FFFFFFF, len(body) + rng.randrange(1, 999), 1]))
        else:
            data[at + 6:at + 8] = struct.pack("<H", rng.choice([0xFFFF, 0xFFF1, 1, 3]))
        yield Case(f"length_{i}", _write(folder, f"length_{i}", meta, bytes(data)), ANY_FATE)
    for i in range(15):  # a VR code replaced by another or by garbage
        meta, body = _explicit(folder, f"vr_{i}")
        at, _ = rng.choice(list(_elements(body)))
        data = bytearray(body)
        data[at + 4:at + 6] = rng.choice([b"QQ", b"\x00\x00", b"SQ", b"OB", b"UN", b"PN",
                                          b"US", b"FD"])
        yield Case(f"vr_{i}", _write(folder, f"vr_{i}", meta, bytes(data)), ANY_FATE)
    for i in range(10):  # truncated anywhere
        meta, body = _explicit(folder, f"truncated_{i}")
        cut = rng.randrange(1, len(body))
        yield Case(f"truncated_{i}", _write(folder, f"truncated_{i}", meta, body[:cut]),
                   NOT_ANALYSED)


def _codestreams(folder: Path, rng: random.Random) -> Iterator[Case]:
    for i in range(8):  # JPEG SOF dimensions that differ from Rows/Columns
        dataset = fresh_copy(SC_JPEG)
        data = bytearray(dataset.PixelData)
        at = data.index(b"\xff\xc0") + 5
        side = rng.choice([1, 7, 1023, 1025, 2048, 30000, 65535])
        data[at:at + 4] = struct.pack(">HH", side, rng.choice([side, 1024, 9]))
        dataset.PixelData = bytes(data)
        path = folder / f"sof_{i}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        yield Case(f"sof_{i}", path, frozenset({"store"}))
    for i in range(4):  # random bytes where the codestream should be
        dataset = fresh_copy(SC_JPEG)
        frame = rng.randbytes(rng.choice([16, 4096, 65536]))
        dataset.PixelData = pydicom.encaps.encapsulate([frame])
        path = folder / f"codestream_garbage_{i}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        yield Case(f"codestream_garbage_{i}", path, NOT_ANALYSED)


def _nested(depth: int) -> bytes:
    """``depth`` undefined-length ContentSequences, each one item deep (explicit VR LE)."""
    opening = (struct.pack("<HH", 0x0040, 0xA730) + b"SQ\x00\x00" + b"\xff" * 4
               + struct.pack("<HH", 0xFFFE, 0xE000) + b"\xff" * 4)
    closing = (struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
               + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    return opening * depth + closing * depth


def _nesting(folder: Path) -> Iterator[Case]:
    for depth in (50, 900, 20000):
        meta, body = _explicit(folder, f"nested_{depth}")
        at = body.index(b"\xe0\x7f\x10\x00")
        path = _write(folder, f"nested_{depth}", meta, body[:at] + _nested(depth) + body[at:])
        yield Case(f"nested_{depth}", path, ANY_FATE if depth < 100 else NOT_ANALYSED)


HOSTILE_NAMES = ["\x1b[31mRED\x07\x08", "%s%n%x{0}{fields}%(message)s",
                 'X\n{"level": "error", "event": "forged"}', '"}], "x": {"', "Q" * 10000]


def _strings(folder: Path) -> Iterator[Case]:
    for i, name in enumerate(HOSTILE_NAMES):
        dataset = fresh_copy(DX_NIH)
        dataset.PatientName = name
        dataset.StudyDescription = name[:64]
        path = folder / f"hostile_string_{i}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        yield Case(f"hostile_string_{i}", path, frozenset({"processed"}))
    dataset = fresh_copy(DX_NIH)
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset["PatientName"].value = b"\xff\xfe\xc3(INVALID"
    path = folder / "invalid_utf8.dcm"
    dataset.save_as(path, enforce_file_format=True)
    yield Case("invalid_utf8", path, frozenset({"processed", "refused"}))


NON_CHEST = {"ct": "1.2.840.10008.5.1.4.1.1.2", "mr": "1.2.840.10008.5.1.4.1.1.4",
             "sr": "1.2.840.10008.5.1.4.1.1.88.33", "pdf": "1.2.840.10008.5.1.4.1.1.104.1",
             "gsps": "1.2.840.10008.5.1.4.1.1.11.1"}


def _objects(folder: Path) -> Iterator[Case]:
    for name, sop_class in NON_CHEST.items():
        dataset = fresh_copy(DX_NIH)
        dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = sop_class
        path = folder / f"object_{name}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        yield Case(f"object_{name}", path, frozenset({"ignored"}))


def build_fuzz(folder: Path) -> list[Case]:
    """The whole corpus (>= 100 cases), written under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    cases = [*_mutations(folder, rng), *_codestreams(folder, rng), *_nesting(folder),
             *_strings(folder), *_objects(folder)]
    cases += [Case(name, path, frozenset({"store"}))
              for name, path in build_bombs(folder / "bombs").items()]
    return cases
