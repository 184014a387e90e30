"""Seconds from a pool's trouble to the alert at the webhook, through real processes on loopback.

Run: ``python benchmarks/detection_latency.py [--runs 5] [--pipeline scrape|remote-write|both]``.
Needs what the end-to-end tests need: the collector build (collector/build.sh), Debian's
Prometheus and Alertmanager. Each run starts a fresh pipeline and the exhausting app of the
end-to-end tests (``tests/support/exhaustion.py``), and measures from the app's first pool
timeout to each timeout and saturation alert, and from the moment its held connections pass the
leak threshold to the leak alert. Medians and maxima over the runs are printed with the
intervals used.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

# The harness lives with the tests; run from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import exhaustion, pipeline

PIPELINES = {
    "scrape": (exhaustion.start_scrape_pipeline, "minimal collector, Prometheus scrape every 1 s"),
    "remote-write": (
        exhaustion.start_remote_write_pipeline,
        "collector/gateway.yaml: batch 2 s, remote write with WAL flush "
        f"{pipeline.REMOTE_WRITE_FLUSH_INTERVAL}",
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


def report(kind: str, runs: list[dict[tuple[str, str], float]]) -> None:
    """Median and maximum per alert."""
    print(f"\n{kind}: {PIPELINES[kind][1]}; {exhaustion.INTERVALS}")
    print(f"  {'alert':<40} {'from':<14} {'median':>7} {'max':>7}   runs")
    for key in sorted(exhaustion.EXPECTED):
        values = [run[key] for run in runs]
        start = "leak" if key in exhaustion.LEAK_ALERTS else "first timeout"
        each = " ".join(f"{v:.1f}" for v in values)
        print(
            f"  {key[0] + ' ' + key[1]:<40} {start:<14} "
            f"{statistics.median(values):>6.2f}s {max(values):>6.2f}s   {each}"
        )


def main() -> None:
    """Run the chosen pipelines ``--runs`` times each and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pipeline", choices=[*PIPELINES, "both"], default="both")
    args = parser.parse_args()
    kinds = list(PIPELINES) if args.pipeline == "both" else [args.pipeline]
    results: dict[str, list[dict[tuple[str, str], float]]] = {kind: [] for kind in kinds}
    for number in range(args.runs):
        for kind in kinds:
            results[kind].append(one_run(kind))
            print(f"run {number + 1}/{args.runs} {kind} done", file=sys.stderr, flush=True)
    for kind in kinds:
        report(kind, results[kind])


if __name__ == "__main__":
    main()
