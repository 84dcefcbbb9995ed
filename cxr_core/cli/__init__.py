"""The ``cxr`` command: analyze files, train and evaluate models, manage model folders.

Exit codes: 0 all inputs analysed; 2 some input refused (the others are still done) or a
bad argument; 1 an internal error.
"""

from __future__ import annotations

import argparse
import gc
import logging
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

_loaded = False


def build_parser() -> argparse.ArgumentParser:
    from cxr_core.cli import analyze, evaluate, models, train  # torch and the rest: see main
    from cxr_core.writers.identity import software_version

    parser = argparse.ArgumentParser(prog="cxr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--version", action="version", version=f"cxr {software_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    analyze.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    models.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with _loading():
        parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "cxr " + shlex.join(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.handler(args))


@contextmanager
def _loading() -> Iterator[None]:
    """Loading the sub-commands (torch and the rest) brings about a million objects to
    life, none of them garbage, and the cyclic collector would scan them all several times
    while they load and again in every later full collection: ~0.25 s of a one-file
    ``cxr analyze``. So, once per process, it waits until they are loaded and then leaves
    them out of its scans (``gc.freeze``); what was garbage before is collected first (a
    small heap then), so a process calling ``main`` again (the tests) freezes none of it.
    """
    global _loaded
    if _loaded or not gc.isenabled():
        yield
        return
    _loaded = True
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.freeze()
