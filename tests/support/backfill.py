"""Generated series backfilled into a real Prometheus on loopback, rules evaluated over them.

For fleets too large for ``promtool test rules`` (it refuses a query that loads more than 10,000
samples, and a 1,000-process histogram loads more): the series become OpenMetrics text,
``promtool tsdb create-blocks-from openmetrics`` turns them into blocks, a Prometheus started on
127.0.0.1 serves them, ``promtool tsdb create-blocks-from rules`` backfills the shipped
recording rules from it, and every shipped alert expression is evaluated as a range query at
each evaluation time, with ``for:`` applied as Prometheus applies it (an alert fires once its
expression has returned the series at every evaluation for ``for:``). The benchmark
``benchmarks/panel_samples.py`` reads query statistics from the same server.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from poolwatch.monitoring import alerts, config
from tests.support import pipeline
from tests.support.fleet import Firing

#: Seconds between evaluations (the shipped rule_interval).
STEP = 60
#: Where the generated series start: far enough in the past for every block to be complete.
HOURS_BACK = 6


def openmetrics(series: Mapping[str, list[str]], base: int, step: int = STEP) -> str:
    """OpenMetrics text: one family per series name, one sample per ``step`` (``_`` skipped)."""
    families: dict[str, list[str]] = {}
    for selector, values in series.items():
        name = selector.split("{", 1)[0]
        # OpenMetrics allows no space between labels
        compact = re.sub(r'",\s+', '",', selector)
        lines = families.setdefault(name, [])
        for minute, value in enumerate(values):
            if value != "_":
                lines.append(f"{compact} {value} {base + minute * step}")
    out = []
    for name, lines in families.items():
        out.append(f"# TYPE {name} unknown")
        out += lines
    out.append("# EOF")
    return "\n".join(out) + "\n"


def _run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:4])} failed: {(result.stdout + result.stderr)[-3000:]}"
        )


@dataclass
class Server:
    """A Prometheus serving backfilled blocks, and the time range the series cover."""

    url: str
    start: int
    end: int

    def get(self, path: str, **params: Any) -> Any:
        answer = pipeline.get_json(f"{self.url}{path}?{urlencode(params)}")
        if answer.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {answer}")
        return answer["data"]

    def range_query(self, expr: str, *, stats: bool = False, **window: Any) -> Any:
        """``/api/v1/query_range`` over the whole series (or ``start``/``end``/``step`` given)."""
        params = {"query": expr, "start": self.start, "end": self.end, "step": STEP, **window}
        if stats:
            params["stats"] = "all"
        return self.get("/api/v1/query_range", **params)


def _prometheus_args(binary: str, data: Path, port: int, directory: Path) -> list[str]:
    settings = pipeline.write_yaml(directory / "prometheus.yml", {"global": {}})
    return [
        binary,
        f"--config.file={settings}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=3650d",
        f"--web.listen-address={pipeline.loopback(port)}",
    ]


@contextmanager
def _prometheus(processes: pipeline.Processes, data: Path, directory: Path) -> Iterator[str]:
    port = pipeline.free_port()
    binary = pipeline.find_tool(*pipeline.PROMETHEUS)
    started = processes.start("prometheus", _prometheus_args(binary, data, port, directory))
    url = f"http://127.0.0.1:{port}"
    pipeline.wait_for(
        "prometheus ready", lambda: pipeline.http_ok(f"{url}/-/ready"), processes, 60.0
    )
    try:
        yield url
    finally:
        processes.stop(started)


@contextmanager
def serve(
    series: Mapping[str, list[str]],
    *,
    minutes: int,
    directory: Path,
    processes: pipeline.Processes,
    rules: Path,
    now: int,
    step: int = STEP,
) -> Iterator[Server]:
    """Backfill ``series`` (``minutes`` samples ``step`` seconds apart) and the recording rules of
    ``rules`` (every minute); yield the Prometheus serving them."""
    promtool = pipeline.find_tool("promtool")
    base = (now // 7200) * 7200 - HOURS_BACK * 3600
    end = base + (minutes - 1) * step
    text = directory / "series.om"
    text.write_text(openmetrics(series, base, step))
    data = directory / "data"
    _run(promtool, "tsdb", "create-blocks-from", "openmetrics", str(text), str(data))
    text.unlink()
    for level in _levels(rules):
        with _prometheus(processes, data, directory) as url:
            text.write_text(_recordings(Server(url, base, end), level))
        more = directory / "recorded"
        _run(promtool, "tsdb", "create-blocks-from", "openmetrics", str(text), str(more))
        text.unlink()
        for block in more.iterdir():
            shutil.move(str(block), data / block.name)
    with _prometheus(processes, data, directory) as url:
        yield Server(url, base, end)


def _levels(rules: Path) -> list[list[dict[str, Any]]]:
    """The recording rules in passes: those reading only raw series, then those reading them."""
    groups = yaml.safe_load(rules.read_text())["groups"]
    group = next(g for g in groups if g["name"] == alerts.RECORDING_GROUP)
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    for rule in group["rules"]:
        reads_recorded = any(earlier["record"] in rule["expr"] for earlier in first)
        (second if reads_recorded else first).append(rule)
    return [first, second] if second else [first]


def _recordings(server: Server, rules: list[dict[str, Any]]) -> str:
    """Each recording rule evaluated at every minute, as OpenMetrics stamped at that minute.

    ``promtool tsdb create-blocks-from rules`` (2.42) stamps each value one evaluation interval
    late, which would shift every alert by a minute; a range query per rule does the same work
    with exact stamps. Unlike the rule manager, nothing here writes staleness markers for a
    recorded series that disappears, so instant lookups of it see its last value for 5m.
    """
    out = []
    for rule in rules:
        out.append(f"# TYPE {rule['record']} unknown")
        for result in server.range_query(rule["expr"], step=STEP)["result"]:
            labels = {k: v for k, v in result["metric"].items() if k != "__name__"}
            inside = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            stamped = [(int(float(t)), v) for t, v in result["values"]]
            out += [f"{rule['record']}{{{inside}}} {v} {t}" for t, v in stamped]
    out.append("# EOF")
    return "\n".join(out) + "\n"


def alert_rules(rules: Path) -> list[dict[str, Any]]:
    """Every alerting rule of the rule file."""
    groups = yaml.safe_load(rules.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def firing(server: Server, rules: Path) -> dict[int, set[Firing]]:
    """Minute -> the alerts firing then, evaluating each rule at every minute with its ``for:``."""
    timeline: dict[int, set[Firing]] = {
        m: set() for m in range((server.end - server.start) // STEP + 1)
    }
    for rule in alert_rules(rules):
        hold = config.seconds(rule.get("for", "0s"))
        for result in server.range_query(rule["expr"])["result"]:
            labels = {k: v for k, v in result["metric"].items() if k != "__name__"}
            name = Firing(rule["alert"], rule["labels"]["severity"], tuple(sorted(labels.items())))
            for minute in _firing_minutes(server, result["values"], hold):
                timeline[minute].add(name)
    return timeline


def _firing_minutes(server: Server, values: list[list[Any]], hold: int) -> Iterator[int]:
    """Prometheus's ``for:``: active from the first evaluation of an unbroken run of results."""
    active_at: int | None = None
    previous: int | None = None
    for stamp, _value in values:
        t = int(float(stamp))
        if previous is None or t - previous > STEP:
            active_at = t
        previous = t
        if active_at is not None and t - active_at >= hold:
            yield (t - server.start) // STEP


def samples_touched(server: Server, expr: str, start: int, end: int, step: int) -> int:
    """``totalQueryableSamples`` of one range query (``stats=all``)."""
    data = server.range_query(expr, stats=True, start=start, end=end, step=step)
    return int(data["stats"]["samples"]["totalQueryableSamples"])


def dump(timeline: Mapping[int, set[Firing]]) -> str:
    """A timeline as readable JSON, for failure messages."""
    return json.dumps(
        {m: sorted(f"{f.alertname}/{f.severity}/{dict(f.labels)}" for f in fs)
         for m, fs in timeline.items() if fs},
        indent=1,
    )  # fmt: skip
