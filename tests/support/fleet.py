"""Generated pool series for fleets of processes, evaluated by promtool with the shipped rules.

A :class:`Process` says, minute by minute, how loaded one process's pool is and whether it is
alive; :func:`series` turns a fleet of them into the series the collector would deliver to
Prometheus (standard names, classic histograms, one ``instance`` per process, no samples after
a process exits: remote write sends no staleness markers). :func:`promtool_test` writes a
``promtool test rules`` file that loads ``alerts/poolwatch-rules.yaml`` and checks which alerts
fire at given minutes.
"""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolwatch import catalog
from poolwatch.monitoring import alerts, config, names, promql

RULES = Path(__file__).resolve().parents[2] / "alerts" / "poolwatch-rules.yaml"
POOL_LABEL = promql.POOL
STATE = promql.STATE
#: Bucket bounds the simulated wait histograms carry. A subset of catalog.WAIT_BUCKETS is enough
#: for histogram_quantile, and promtool's unit tests refuse a query that loads more than 50,000
#: samples: 1,000 processes x 4 buckets x 6 samples of a 5m window stays below.
BOUNDS = ("0.01", "1", "2.5", "+Inf")
#: Every bucket bound of the wait histogram, as the collector writes ``le``.
ALL_BOUNDS = (*(f"{bound:g}" for bound in catalog.WAIT_BUCKETS), "+Inf")
CHECKOUTS_PER_MINUTE = 600
MAX_CONNECTIONS = 10
#: Series per simulated process: used, max, pending, leaked, timeouts, wait count, buckets.
SERIES_PER_PROCESS = 6 + len(BOUNDS)

_BUCKET, _COUNT, _SUM = names.prometheus_series(catalog.CONNECTION_WAIT_TIME)


@dataclass(frozen=True)
class Minute:
    """What one process's pool did in one minute."""

    used: int
    pending: int = 0
    leaked: int = 0
    #: Share of the minute's checkouts that waited longer than 1 s (landing in the 2.5 s bucket).
    slow: float = 0.0
    #: Share of the minute's checkouts that timed out (landing above every finite bucket).
    timeouts: float = 0.0


Behaviour = Callable[[int, random.Random], Minute]


def healthy(load: float) -> Behaviour:
    """A pool at ``load`` on average: used ~ Binomial(max, load), a rare one-caller queue."""

    def minute(_m: int, rng: random.Random) -> Minute:
        used = sum(rng.random() < load for _ in range(MAX_CONNECTIONS))
        pending = 1 if used == MAX_CONNECTIONS and rng.random() < 0.5 else 0
        return Minute(used, pending)

    return minute


def saturated_from(start: int, load: float) -> Behaviour:
    """Healthy until ``start``, then full: a queue of 3, 20% slow checkouts, 2% timeouts."""
    before = healthy(load)

    def minute(m: int, rng: random.Random) -> Minute:
        if m < start:
            return before(m, rng)
        return Minute(MAX_CONNECTIONS, pending=3, slow=0.2, timeouts=0.02)

    return minute


def leaking_from(start: int, load: float, every: int) -> Behaviour:
    """Healthy plus one more connection held and never returned every ``every`` minutes."""
    before = healthy(load)

    def minute(m: int, rng: random.Random) -> Minute:
        state = before(m, rng)
        leaked = 0 if m < start else 1 + (m - start) // every
        return Minute(min(MAX_CONNECTIONS, state.used + leaked), state.pending, leaked)

    return minute


@dataclass(frozen=True)
class Process:
    """One process of a service: its instance id, behaviour, and the minutes it is alive."""

    job: str
    instance: str
    behaviour: Behaviour
    start: int = 0
    #: First minute without samples (None: alive to the end).
    end: int | None = None
    pool: str = "main"

    def alive(self, m: int) -> bool:
        return self.start <= m and (self.end is None or m < self.end)


def fleet(job: str, size: int, behaviour: Behaviour, **overrides: Behaviour) -> list[Process]:
    """``size`` processes ``<job>-0`` ...; ``overrides`` give some instances another behaviour."""
    made = []
    for n in range(size):
        instance = f"{job}-{n}"
        made.append(Process(job, instance, overrides.get(instance, behaviour)))
    return made


@dataclass
class _Counters:
    bounds: tuple[str, ...]
    checkouts: int = 0
    timeouts: int = 0
    buckets: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.buckets = [0] * len(self.bounds)
        finite = [float(b) for b in self.bounds[:-1]]
        # where each kind of wait lands: at most 10 ms, between 1 s and 2.5 s, above every bound
        self._fast = next(i for i, b in enumerate(finite) if b >= 0.01)
        self._slow = next(i for i, b in enumerate(finite) if b >= 2.5)

    def add(self, state: Minute) -> None:
        total = CHECKOUTS_PER_MINUTE
        timed_out = round(total * state.timeouts)
        slow = round(total * state.slow)
        self.checkouts += total
        self.timeouts += timed_out
        for index in range(len(self.bounds)):
            below = total - timed_out - slow if index >= self._fast else 0
            below += slow if index >= self._slow else 0
            below += timed_out if index == len(self.bounds) - 1 else 0
            self.buckets[index] += below


def _labels(process: Process, **extra: str) -> str:
    pairs = {"job": process.job, "instance": process.instance, POOL_LABEL: process.pool, **extra}
    return ", ".join(f'{key}="{value}"' for key, value in pairs.items())


def series(
    processes: Iterable[Process],
    minutes: int,
    seed: int = 1,
    bounds: tuple[str, ...] = BOUNDS,
) -> dict[str, list[str]]:
    """Series selector -> one value per minute (``_`` where the process is not alive)."""
    out: dict[str, list[str]] = {}
    rng = random.Random(seed)
    for process in processes:
        rows: dict[str, list[str]] = {}
        counters = _Counters(bounds)
        for m in range(minutes):
            if not process.alive(m):
                for row in rows.values():
                    row.append("_")
                continue
            state = process.behaviour(m, rng)
            counters.add(state)
            values = _values(process, state, counters)
            for key, value in values.items():
                rows.setdefault(key, ["_"] * m).append(value)
        out.update(rows)
    return out


def _values(process: Process, state: Minute, counters: _Counters) -> dict[str, str]:
    used = names.prometheus_name(catalog.CONNECTION_COUNT)
    values = {
        f"{used}{{{_labels(process, **{STATE: catalog.STATE_USED})}}}": str(state.used),
        f"{names.prometheus_name(catalog.CONNECTION_MAX)}{{{_labels(process)}}}": str(
            MAX_CONNECTIONS
        ),
        f"{names.prometheus_name(catalog.CONNECTION_PENDING_REQUESTS)}{{{_labels(process)}}}": (
            str(state.pending)
        ),
        f"{names.prometheus_name(catalog.CONNECTION_LEAKED)}{{{_labels(process)}}}": str(
            state.leaked
        ),
        f"{names.prometheus_name(catalog.CONNECTION_TIMEOUTS)}{{{_labels(process)}}}": str(
            counters.timeouts
        ),
        f"{_COUNT}{{{_labels(process)}}}": str(counters.checkouts),
    }
    for bound, count in zip(counters.bounds, counters.buckets, strict=True):
        values[f"{_BUCKET}{{{_labels(process, le=bound)}}}"] = str(count)
    return values


# --- promtool ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Firing:
    """One firing alert as ``ALERTS`` shows it: name, severity and the labels it names."""

    alertname: str
    severity: str
    labels: tuple[tuple[str, str], ...]

    def sample(self) -> dict[str, Any]:
        """This alert as a promtool ``exp_samples`` entry of ``ALERTS{alertstate="firing"}``."""
        pairs = {
            "__name__": "ALERTS",
            "alertname": self.alertname,
            "alertstate": "firing",
            alerts.ALERT_LABEL: self.alertname,
            "severity": self.severity,
            **dict(self.labels),
        }
        inside = ", ".join(f'{key}="{value}"' for key, value in sorted(pairs.items()))
        return {"labels": "{" + inside + "}", "value": 1}


def process_alert(alertname: str, severity: str, process: Process) -> Firing:
    """A per-process alert about ``process``'s pool."""
    labels = {"job": process.job, "instance": process.instance, POOL_LABEL: process.pool}
    return Firing(alertname, severity, tuple(sorted(labels.items())))


def pool_alert(alertname: str, severity: str, job: str, pool: str = "main") -> Firing:
    """A per-pool (fleet) alert."""
    return Firing(alertname, severity, tuple(sorted({"job": job, POOL_LABEL: pool}.items())))


@dataclass(frozen=True)
class Scenario:
    """A fleet, how long it runs, and the exact firing alerts expected at given minutes."""

    name: str
    processes: list[Process]
    minutes: int
    expected: Mapping[int, set[Firing]]


def _group_order() -> list[str]:
    return [g["name"] for g in alerts.prometheus_rule_groups(config.MonitoringConfig())["groups"]]


def test_document(scenarios: Iterable[Scenario], rules: Path = RULES) -> dict[str, Any]:
    """A promtool test file: one test group per scenario, ``ALERTS`` checked at each minute."""
    tests = []
    for scenario in scenarios:
        data = series(scenario.processes, scenario.minutes)
        checks = [
            {
                "expr": f'ALERTS{{alertstate="firing", job="{scenario.processes[0].job}"}}',
                "eval_time": f"{minute}m",
                "exp_samples": [f.sample() for f in sorted(firing, key=_order)],
            }
            for minute, firing in sorted(scenario.expected.items())
        ]
        tests.append(
            {
                "name": scenario.name,
                "interval": "1m",
                "input_series": [
                    {"series": name, "values": " ".join(values)} for name, values in data.items()
                ],
                "promql_expr_test": checks,
            }
        )
    return {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        # Prometheus runs groups concurrently: alerts may see a recording one interval late.
        # promtool runs them in this order, so the minutes below are exact.
        "group_eval_order": _group_order(),
        "tests": tests,
    }


def _order(firing: Firing) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    return (firing.alertname, firing.severity, firing.labels)


def run_promtool(promtool: str, document: Mapping[str, Any], path: Path) -> str:
    """Write the test file and run ``promtool test rules``; returns its output, raising on failure."""
    # JSON is YAML, and writes a 1,000-process file in a fraction of PyYAML's time
    path.write_text(json.dumps(document))
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(output[-20000:])
    return output


def quiet(minutes: Iterable[int]) -> dict[int, set[Firing]]:
    """No firing alert at any of ``minutes``."""
    return {minute: set() for minute in minutes}
