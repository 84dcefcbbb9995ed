"""``cxr analyze``: many inputs, one engine, refusals reported without stopping the run."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tqdm import tqdm

from cxr_core.cli.common import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, SubParsers
from cxr_core.io import RefusedInput, expand_inputs, read_radiograph
from cxr_core.radiograph import PixelSpacing, SpacingSource
from cxr_core.timing import timed_call
from cxr_core.writers.outputs import DEFAULT_OUTPUTS, OUTPUT_KINDS, parse_outputs

if TYPE_CHECKING:
    from cxr_core.analysis import Analysis

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser("analyze", help="analyse DICOM / PNG / JPEG chest radiographs")
    parser.add_argument("inputs", nargs="+", type=Path, help="files or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--pin", action="append", default=[], metavar="NAME@VERSION",
                        help="run this kept model version instead of the active one "
                        "(cxr models list shows them); repeatable")
    parser.add_argument(
        "--outputs", default=",".join(DEFAULT_OUTPUTS), metavar="KINDS",
        help=f"comma-separated files to write: {', '.join(OUTPUT_KINDS)}, or all "
             f"(default: {','.join(DEFAULT_OUTPUTS)}; heat maps at source resolution are "
             "written when asked)")
    parser.add_argument(
        "--pixel-spacing", default=None, metavar="ROW_MM,COLUMN_MM[,SOURCE]",
        help="pixel spacing of image-file inputs (DICOM inputs keep their own), e.g. "
             "0.2,0.2 (taken as calibrated) or 0.15,0.15,ImagerPixelSpacing (at the "
             "detector: no mm measurements); as Slicer hands over a volume's spacing")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    pins = dict(pin.partition("@")[::2] for pin in args.pin)
    if any(not name or not version for name, version in pins.items()):
        print("cxr analyze: --pin takes NAME@VERSION (e.g. lung_seg@1.0.0)", file=sys.stderr)
        return EXIT_REFUSED
    try:
        outputs = parse_outputs(args.outputs)
        spacing = parse_spacing(args.pixel_spacing) if args.pixel_spacing else None
    except ValueError as error:
        print(f"cxr analyze: {error}", file=sys.stderr)
        return EXIT_REFUSED
    return analyze_paths(args.inputs, args.out, models_dir=args.models_dir, pins=pins,
                         outputs=outputs, spacing=spacing)


def parse_spacing(text: str) -> PixelSpacing:
    """``ROW_MM,COLUMN_MM[,SOURCE]`` -> a spacing (``calibrated`` unless a source is named).

    Raises
    ------
    ValueError
        Naming what is wrong: not two positive numbers, or an unknown source.
    """
    parts = [part.strip() for part in text.split(",")]
    sources = {source.value: source for source in SpacingSource
               if source is not SpacingSource.UNKNOWN}
    try:
        row_mm, column_mm = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        row_mm = column_mm = 0.0
    if len(parts) not in (2, 3) or not (0 < row_mm < 10 and 0 < column_mm < 10):
        raise ValueError(f"--pixel-spacing {text!r}: give ROW_MM,COLUMN_MM in mm (0-10), "
                         "optionally ,SOURCE")
    source = parts[2] if len(parts) == 3 else SpacingSource.CALIBRATED.value
    if source not in sources:
        raise ValueError(f"--pixel-spacing: unknown source {source!r}; choose from "
                         f"{', '.join(sources)}")
    return PixelSpacing(row_mm, column_mm, sources[source])


def analyze_paths(inputs: list[Path], out_dir: Path, *, models_dir: Path | None = None,
                  pins: dict[str, str] | None = None,
                  outputs: Collection[str] = DEFAULT_OUTPUTS,
                  spacing: PixelSpacing | None = None) -> int:
    """Analyse every input, writing the ``outputs`` kinds; print one line per refused
    input; return the exit code. ``spacing`` applies to image files (a DICOM header's
    spacing always wins)."""
    files = expand_inputs(inputs)
    if not files:
        print("cxr analyze: no input files found", file=sys.stderr)
        return EXIT_REFUSED
    from cxr_core.engine import Engine  # imports torch: only once there is work
    from cxr_core.writers.files import write_outputs
    from cxr_core.writers.review_list import ReviewRow, write_review

    try:
        engine = Engine(models_dir=models_dir, pins=pins)
    except (FileNotFoundError, ValueError) as error:  # a pin that cannot be honoured
        print(f"cxr analyze: {error}", file=sys.stderr)
        return EXIT_REFUSED
    def analyze(path: Path) -> Analysis:
        timings: dict[str, float] = {}
        radiograph = timed_call(timings, "read", read_radiograph, path)
        if spacing is not None and radiograph.source_dataset is None:
            radiograph.spacing = spacing
        analysis = engine.analyze(radiograph)
        analysis.timings = timings | analysis.timings
        return analysis

    refused = failed = 0
    review: list[ReviewRow] = []
    progress = tqdm(files, desc="analyzing", unit="image", disable=len(files) < 2,
                    file=sys.stderr)
    for path, analyzed in one_ahead(progress, analyze):
        try:
            analysis = analyzed.result()
            written = write_outputs(analysis, out_dir, outputs)
        except RefusedInput as error:
            refused += 1
            tqdm.write(f"refused {path.name}: {error}", file=sys.stderr)
            review.append(ReviewRow.not_analyzed(path, "refused", str(error)))
            continue
        except Exception as error:  # one bad input must not stop the others
            failed += 1
            log.error("internal error on %s", path.name, exc_info=error)
            tqdm.write(f"failed {path.name}: internal error ({type(error).__name__}: {error})",
                       file=sys.stderr)
            review.append(ReviewRow.not_analyzed(path, "failed", type(error).__name__))
            continue
        review.append(ReviewRow.analyzed(path, written.folder, analysis))
        flags = f" [{', '.join(analysis.quality_flags)}]" if analysis.quality_flags else ""
        tqdm.write(f"analyzed {path.name} -> {written.folder}{flags}")
    print(f"review list (least trusted masks first): {write_review(review, out_dir)}")
    if failed:
        return EXIT_FAILED
    return EXIT_REFUSED if refused else EXIT_OK


def one_ahead(items: Iterable[T], work: Callable[[T], R]) -> Iterator[tuple[T, Future[R]]]:
    """Each item with its ``work``, done in a thread of its own one item ahead: while the
    caller writes one image's files (mostly Python, zlib and numpy) the next one is read
    and analysed (torch and numpy), so on two cores the two overlap. At most two results
    are held; a result's exception is raised by ``future.result()``; the thread ends with
    the loop (what is ahead is dropped if the caller stops early)."""
    pending = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxr-analyze") as pool:
        try:
            ahead = [(item, pool.submit(work, item)) for item in islice(pending, 1)]
            while ahead:
                current = ahead.pop()
                ahead = [(item, pool.submit(work, item)) for item in islice(pending, 1)]
                yield current
        finally:
            for _, future in ahead:
                future.cancel()
