"""Seconds from a pool's trouble to the alert at the webhook, through real processes on loopback.

Run: ``python benchmarks/detection_latency.py [--runs 5] [--pipeline scrape|remote-write|both]
[--write-docs]``.
Needs what the end-to-end tests need: the collector build (collector/build.sh), Debian's
Prometheus and Alertmanager. Each run starts a fresh pipeline and the exhausting app of the
end-to-end tests (``tests/support/exhaustion.py``), and measures from the app's first pool
timeout to each timeout and saturation alert, and from the moment its held connections pass the
leak threshold to the leak alert. Medians and maxima over the runs are printed as one markdown
table (a column pair per pipeline), under a line naming the intervals used.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

# The harness lives with the tests; run from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _docs

from tests.support import exhaustion, pipeline

PIPELINES = {
    "scrape": (exhaustion.start_scrape_pipeline, "scrape every 1 s"),
    "remote-write": (
        exhaustion.start_remote_write_pipeline,
        "gateway remote write (batch 2 s, WAL flush "
        f"{pipeline.REMOTE_WRITE_FLUSH_INTERVAL.removesuffix('s')} s)",
    ),
}


def one_run(kind: str) -> dict[tuple[str, str], float]:
    """Latency of every expected alert in one fresh pipeline."""
    start, _ = PIPELINES[kind]
    with (
        tempfile.TemporaryDirectory(prefix="poolwatch-latency-") as directory,
        pipeline.running_processes(Path(directory)) as processes,
        pipeline.serve_webhook() as webhook,
    ):
        backends, otlp_http = start(Path(directory), processes, webhook)
        return exhaustion.exhaust(processes, webhook, backends, otlp_http).latencies()


def report(runs: dict[str, list[dict[tuple[str, str], float]]]) -> str:
    """Median and maximum per alert and pipeline, in seconds, as a markdown table."""
    kinds = list(runs)
    header = ["alert", "from"]
    for kind in kinds:
        header += [f"{PIPELINES[kind][1]}: median", "max"]
    rows = [
        f"Over {len(runs[kinds[0]])} runs; {exhaustion.INTERVALS}.",
        "",
        "| " + " | ".join(header) + " |",
        "| --- | --- |" + " ---: | ---: |" * len(kinds),
    ]
    for key in sorted(exhaustion.EXPECTED):
        cells = [f"{key[0]} {key[1]}", "leak" if key in exhaustion.LEAK_ALERTS else "first timeout"]
        for kind in kinds:
            values = [run[key] for run in runs[kind]]
            cells += [f"{statistics.median(values):.1f} s", f"{max(values):.1f} s"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    """Run the chosen pipelines ``--runs`` times each and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pipeline", choices=[*PIPELINES, "both"], default="both")
    _docs.add_flag(parser)
    args = parser.parse_args()
    kinds = list(PIPELINES) if args.pipeline == "both" else [args.pipeline]
    results: dict[str, list[dict[tuple[str, str], float]]] = {kind: [] for kind in kinds}
    for number in range(args.runs):
        for kind in kinds:
            results[kind].append(one_run(kind))
            each = " ".join(f"{value:.1f}" for _, value in sorted(results[kind][-1].items()))
            print(f"run {number + 1}/{args.runs} {kind}: {each}", file=sys.stderr, flush=True)
    table = report(results)
    print(table)
    if args.write_docs:
        _docs.write("detection_latency", table)


if __name__ == "__main__":
    main()
