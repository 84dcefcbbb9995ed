"""cxr-node under a backlog: studies per minute and end-to-end latency with 1, 10 and 50
CR studies queued at once, and the node's peak memory (its whole process tree).

Each variant is one node process (``tests/node/node_helpers.NodeProcess``: one worker,
quiet period 0.5 s, a dcmtk storescp destination, the review page's pictures kept as by
default). After one warm-up study it gets bursts of copies of RG1_UNCR (CR 1955x1841,
7.2 MB), each copy a new study, sent by storescu in one association: ``--singles`` bursts
of one study, then one of 10, then one of 50 (``--bursts``).

* latency of a study: its last result delivered (the store's ``sent_at``) minus its last
  instance received plus the quiet period (what the node adds after the quiet period);
* studies per minute of a burst: studies / (last result delivered - first study quiet);
* memory: summed RSS of the node and its descendants every 20 ms
  (``node_busy.PeakSampler``), the peak over the whole run.

Variants (``--variants``, in that order, each run ``--rounds`` times, interleaved):

* ``before``: the code at ``--baseline`` (a copy of the code before this change, e.g.
  ``git archive``) with its defaults, which send the heat-map SEG (``heatmap_seg =
  true``; with ``--baseline-own-defaults`` no such key is written: code from before the
  key existed, such as the issue's start 0f74910, runs exactly as configured by default);
* ``after``: this checkout with its defaults;
* ``after+heatmaps``: this checkout sending the heat-map SEG (like for like with before);
* ``after-threads1`` / ``after-threads2``: this checkout, torch threads per worker forced.

Reference: one MONAI DenseNet121@224 forward (``timing.reference_forward``, torch's own
thread count), measured in this process before each variant; times are also given as
multiples of it.

    .venv/bin/python benchmarks/node_backlog.py --baseline /tmp/before [--rounds 1]

Writes ``benchmarks/results/node_backlog.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node_busy import PeakSampler  # noqa: E402
from node_latency import percentile  # noqa: E402
from timing import reference_forward  # noqa: E402

from tests.node.node_helpers import (  # noqa: E402  (the tests' real-process helpers)
    CR_UNCOMPRESSED,
    DEST_AE,
    NodeProcess,
    Storescp,
    copy_with_new_uids,
    storescu,
    wait_for,
)

QUIET_S = 0.5
VARIANTS: dict[str, dict[str, Any]] = {
    "before": {"baseline": True, "heatmap_seg": True},
    "after": {},
    "after+heatmaps": {"heatmap_seg": True},
    "after-threads1": {"torch_threads": 1},
    "after-threads2": {"torch_threads": 2},
}
DONE_SQL = ("SELECT s.study_uid, s.last_received, MAX(d.sent_at), "
            "SUM(CASE WHEN d.state = 'sent' THEN 0 ELSE 1 END) "
            "FROM studies s JOIN deliveries d ON d.study_id = s.id GROUP BY s.id")


def burst(node: NodeProcess, folder: Path, count: int) -> dict[str, Any]:
    """Send ``count`` new studies at once; wait until each one's results are delivered."""
    files = [copy_with_new_uids(CR_UNCOMPRESSED, folder) for _ in range(count)]
    uids = {str(path.stem) for path in files}  # one instance per study: its SOP UID
    studies = {row[0] for row in node.query(
        "SELECT s.study_uid FROM studies s JOIN instances i ON i.study_id = s.id")}
    sent = storescu(files, node.port)
    if sent.returncode != 0:
        raise RuntimeError(f"storescu failed: {sent.stderr[-300:]}")
    new = {row[0] for row in node.query(
        "SELECT s.study_uid FROM studies s JOIN instances i ON i.study_id = s.id "
        f"WHERE i.sop_uid IN ({', '.join('?' * len(uids))})", tuple(uids))} - studies

    def finished() -> list[tuple] | None:
        rows = [r for r in node.query(DONE_SQL) if r[0] in new]
        return rows if len(rows) == count and all(r[3] == 0 for r in rows) else None
    rows = wait_for(finished, 60 + 20 * count, f"{count} studies delivered", interval=0.2)
    latencies = [r[2] - (r[1] + QUIET_S) for r in rows]
    span = max(r[2] for r in rows) - min(r[1] + QUIET_S for r in rows)
    return {"studies": count, "latencies_s": latencies, "span_s": span,
            "studies_per_minute": 60 * count / span}


def run_variant(name: str, root: Path, baseline: Path | None, singles: int,
                sizes: list[int]) -> dict[str, Any]:
    spec = VARIANTS[name]
    env = None
    if spec.get("baseline"):
        if baseline is None:
            raise SystemExit("--baseline: needed for the 'before' variant")
        env = {**os.environ, "PYTHONPATH": str(baseline)}
    threads = spec.get("torch_threads")
    destination = Storescp(root / "destination").start()
    node = NodeProcess(root / "node", destinations=[("pacs", DEST_AE, destination.port)],
                       quiet_period=QUIET_S, heatmap_seg=spec.get("heatmap_seg", False),
                       jobs_keys=f"torch_threads = {threads}" if threads else "", env=env)
    result: dict[str, Any] = {"variant": name, "load_before": os.getloadavg()}
    try:
        node.start(timeout=180)
        sampler = PeakSampler(node.process.pid)  # type: ignore[union-attr]
        sampler.start()
        burst(node, root / "warmup", 1)  # the first analysis imports and warms up
        ones = [burst(node, root / f"single{i}", 1) for i in range(singles)]
        result["bursts"] = {
            "1": {"studies": 1, "latencies_s": [b["latencies_s"][0] for b in ones]},
            **{str(size): burst(node, root / f"burst{size}", size) for size in sizes}}
        sampler.done.set()
        sampler.join()
        result["peak_tree_mb"] = sampler.peak_mb
        result["vmhwm_mb"] = sampler.hwm_mb
    finally:
        node.stop(timeout=60)
        destination.stop()
        shutil.rmtree(root, ignore_errors=True)  # the results of 61 studies: up to 2 GB
    result["load_after"] = os.getloadavg()
    return result


def summary(runs: list[dict[str, Any]], reference_s: float) -> list[str]:
    """Markdown rows: per variant and burst, latency p50/p95 and studies per minute (median
    over rounds), in seconds and multiples of the reference, and throughput against
    ``before`` when it was run."""
    lines = ["| variant | queued | latency p50 s (x ref) | p95 s (x ref) | studies/min | "
             "s per study (x ref) | vs before | peak RSS tree MB |",
             "|---|---|---|---|---|---|---|---|"]
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], []).append(run)

    def rate(variant: str, size: str) -> float | None:
        bursts = [r["bursts"][size] for r in by_variant.get(variant, [])]
        if not bursts or "studies_per_minute" not in bursts[0]:
            return None
        return statistics.median(b["studies_per_minute"] for b in bursts)
    for variant, vruns in by_variant.items():
        peak = max(r["peak_tree_mb"] for r in vruns)
        for size in vruns[0]["bursts"]:
            lat = [t for r in vruns for t in r["bursts"][size]["latencies_s"]]
            p50, p95 = statistics.median(lat), percentile(lat, 95)
            spm, before = rate(variant, size), rate("before", size)
            cells = ["-"] * 3 if spm is None else [
                f"{spm:.1f}", f"{60 / spm:.2f} ({60 / spm / reference_s:.1f}x)",
                f"{spm / before:.2f}x" if before else "-"]
            lines.append(f"| {variant} | {size} | {p50:.2f} ({p50 / reference_s:.0f}x) | "
                         f"{p95:.2f} ({p95 / reference_s:.0f}x) | {' | '.join(cells)} | "
                         f"{peak:.0f} |")
    return lines


def paired_ratios(runs: list[dict[str, Any]], size: str) -> dict[str, Any]:
    """Per variant: studies per minute at burst ``size`` over ``before``'s in the same
    round (load changes hit both), each round's, their mean and a t-based 95% CI."""
    from scipy import stats

    before = {r["round"]: r["bursts"][size]["studies_per_minute"] for r in runs
              if r["variant"] == "before" and size in r["bursts"]}
    ratios: dict[str, list[float]] = {}
    for run in runs:
        if run["variant"] != "before" and run["round"] in before and size in run["bursts"]:
            ratios.setdefault(run["variant"], []).append(
                run["bursts"][size]["studies_per_minute"] / before[run["round"]])
    out: dict[str, Any] = {}
    for variant, values in ratios.items():
        mean = statistics.mean(values)
        half = (stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values)
                / len(values) ** 0.5) if len(values) > 1 else float("nan")
        out[variant] = {"rounds": values, "mean": mean, "ci95": [mean - half, mean + half]}
    return out


def save(out: Path, runs: list[dict[str, Any]], references: list[float],
         sizes: list[int]) -> list[str]:
    """Write the report (after every run, so an interrupted benchmark keeps its runs)."""
    reference_s = statistics.median(references)
    table = summary(runs, reference_s)
    report = {"reference_forward_s": references, "quiet_period_s": QUIET_S,
              "saved": time.strftime("%Y-%m-%d %H:%M"), "table": table,
              "throughput_vs_before": {str(n): paired_ratios(runs, str(n)) for n in sizes},
              "runs": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["before", "after", "after+heatmaps"],
                        choices=list(VARIANTS))
    parser.add_argument("--baseline-own-defaults", action="store_true",
                        help="write no heatmap_seg key for 'before' (code older than it)")
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--singles", type=int, default=5)
    parser.add_argument("--bursts", type=int, nargs="+", default=[10, 50],
                        help="studies sent at once after the single ones")
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks" / "results" / "node_backlog.json")
    args = parser.parse_args()
    args.out = args.out.resolve()  # the runs chdir to a temporary folder
    if args.baseline_own_defaults:
        VARIANTS["before"]["heatmap_seg"] = None
    references: list[float] = []
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="node-backlog-") as tmp:
        os.chdir(tmp)  # `python -m dicom_node` must not import this checkout for 'before'
        for round_ in range(args.rounds):
            for name in args.variants:
                references.append(reference_forward(runs=30))
                print(f"round {round_} {name}: reference {1000 * references[-1]:.1f} ms",
                      flush=True)
                runs.append({**run_variant(name, Path(tmp) / f"r{round_}-{name}",
                                           args.baseline, args.singles, args.bursts),
                             "reference_s": references[-1], "round": round_})
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "bursts"}),
                      flush=True)
                table = save(args.out, runs, references, args.bursts)
    print(f"reference DenseNet121@224 forward: median {1000 * statistics.median(references):.1f}"
          " ms")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
