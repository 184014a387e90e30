"""The one monitoring config: selectors, thresholds, ``for`` durations, datasources, links.

Defaults live here; a YAML or JSON file and ``--set key=value`` flags override them, in that
order (``--set thresholds.pool_saturation.warning=0.7``). Every dashboard, rule and runbook is
built from one :class:`MonitoringConfig`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

#: How the standard histograms reach Prometheus: classic ``_bucket``/``_sum``/``_count`` series
#: (what the collector's exporters write by default) or native histograms.
HistogramMode = Literal["classic", "native"]

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


@dataclass(frozen=True, slots=True)
class Threshold:
    """When one alert fires: a warning and/or critical bound, each with its ``for`` duration."""

    warning: float | None = None
    critical: float | None = None
    warning_for: str = "5m"
    critical_for: str = "5m"


def _default_thresholds() -> dict[str, Threshold]:
    return {
        # per process: average used / max over the rate window
        "pool_saturation": Threshold(0.8, 0.95, "5m", "5m"),
        # per pool across its processes: the mean of the processes' average saturation
        "fleet_saturation": Threshold(0.7, 0.85, "10m", "10m"),
        # per pool across its processes: timeouts per checkout attempt
        "checkout_timeouts": Threshold(0.001, 0.01, "5m", "5m"),
        # per process: p99 checkout wait over the rate window, seconds
        "wait_time_p99": Threshold(0.25, 2.0, "10m", "5m"),
        # per process: fewest callers waiting at any sample of the rate window
        "pending_requests": Threshold(0.0, 5.0, "10m", "5m"),
        # per process: saturation extrapolated forecast_horizon ahead
        "exhaustion_forecast": Threshold(1.0, None, "15m"),
        # per process: connections held past the leak threshold
        "connections_leaked": Threshold(0.0, 5.0, "5m", "5m"),
        "never_returned": Threshold(0.0, None, "1m"),
        # per process and error type: connection opens that failed over the rate window
        "connection_create_errors": Threshold(0.0, 10.0, "2m", "2m"),
        "session_conflicts": Threshold(0.0, None, "5m"),
        "django_orphans": Threshold(0.0, 10.0, "10m", "5m"),
        "postgres_connections": Threshold(0.8, 0.9, "5m", "5m"),
        "idle_in_transaction": Threshold(300.0, 1800.0, "2m", "2m"),
        # per PgBouncer pool (database, user): clients queued for a server connection
        "pgbouncer_clients_waiting": Threshold(0.0, None, "2m"),
        # per PgBouncer pool: seconds the oldest waiting client has waited (whole seconds)
        "pgbouncer_max_wait": Threshold(1.0, 5.0, "1m", "1m"),
        # per PgBouncer pool: clients waiting while no idle or used server connection is left
        "pgbouncer_pool_exhausted": Threshold(None, 0.0, critical_for="2m"),
        # per PgBouncer: client connections / pgbouncer_max_client_conn (off while that is unset)
        "pgbouncer_client_connections": Threshold(0.8, 0.95, "5m", "5m"),
        # per pool: processes fewer than the usual count (or none at all)
        "telemetry_missing": Threshold(0.0, None, "10m"),
        "internal_errors": Threshold(0.0, None, "5m"),
    }


#: The values a threshold may take, per alert key: shares are 0..1, the rest are non-negative.
THRESHOLD_RANGES: dict[str, tuple[float, float]] = {
    "pool_saturation": (0.0, 1.0),
    "fleet_saturation": (0.0, 1.0),
    "checkout_timeouts": (0.0, 1.0),
    "postgres_connections": (0.0, 1.0),
    "pgbouncer_client_connections": (0.0, 1.0),
    "exhaustion_forecast": (0.0, 10.0),
}
_NON_NEGATIVE = (0.0, float("inf"))


@dataclass(frozen=True, slots=True)
class MonitoringConfig:
    """Everything a user may want to change about the generated dashboards and alert rules."""

    #: Extra label matchers on every application-side series, e.g. ``cluster="prod"``.
    selector: str = ""
    #: Matchers for the PostgreSQL monitor's series (collector/postgres.yaml names it).
    postgres_selector: str = 'job="postgresql"'
    #: Matchers for the PgBouncer monitor's series (collector/pgbouncer.yaml names it).
    pgbouncer_selector: str = 'job="pgbouncer"'
    #: PgBouncer's ``max_client_conn`` (not among its metrics); unset, the client-connections
    #: alert and the dashboard's limit line are left out.
    pgbouncer_max_client_conn: int | None = None
    #: ``classic`` (``*_bucket``/``_sum``/``_count`` series) or ``native`` Prometheus histograms.
    histograms: HistogramMode = "classic"
    #: Range of the rate()/increase()/avg_over_time() windows of recording and alert rules
    #: (dashboards use $__rate_interval on raw series).
    rate_window: str = "5m"
    #: A process counts only while one of its series has a sample this recent: remote write sends
    #: no staleness markers, so an exited process's last values would otherwise linger 5m.
    freshness: str = "2m"
    #: Alerts and panels read the recording rules' series (generated beside the alerts); false
    #: inlines their expressions instead (no recording rules needed; much heavier queries).
    recording_rules: bool = True
    #: How far back telemetry_missing looks for the usual number of processes of a pool.
    processes_lookback: str = "1h"
    #: How much history the exhaustion forecast fits, and how far ahead it looks.
    forecast_window: str = "1h"
    forecast_horizon: str = "1h"
    #: How long without pool metrics before telemetry counts as missing.
    missing_window: str = "10m"
    #: Where runbooks are published; each alert's ``runbook_url`` is ``<base>/<alert name>.md``.
    #: The default, ``alerts/runbooks``, names the runbook files ``poolwatch generate`` writes
    #: beside the rules, relative to the directory it writes into (``--root``). Set an http(s)
    #: URL where they are published (a wiki, a Git host) to make the link clickable in alerts.
    runbook_base_url: str = "alerts/runbooks"
    #: Labels added to every alert rule (team, tier, ...).
    alert_labels: Mapping[str, str] = field(default_factory=dict)
    thresholds: Mapping[str, Threshold] = field(default_factory=_default_thresholds)
    #: Evaluation interval of every rule group.
    rule_interval: str = "1m"
    #: Datasource uids that Grafana-managed alert rules query and dashboard variables default to.
    prometheus_datasource_uid: str = "prometheus"
    loki_datasource_uid: str = "loki"
    tempo_datasource_uid: str = "tempo"
    #: Grafana folder for dashboards and alert rules.
    grafana_folder_uid: str = "poolwatch"
    grafana_folder_title: str = "poolwatch"
    #: A checkout slower than this shows in the Tempo "slow checkouts" panel.
    slow_checkout: str = "100ms"

    def __post_init__(self) -> None:
        validate(self)

    def threshold(self, key: str) -> Threshold:
        """The threshold of alert ``key``; unknown keys are a programming error."""
        return self.thresholds[key]


class ConfigError(ValueError):
    """A config file or ``--set`` override that cannot be applied, with the reason."""


def load(path: Path | None = None, overrides: Sequence[str] = ()) -> MonitoringConfig:
    """Defaults, then the YAML/JSON file at ``path``, then ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_file(path)
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {override!r}")
        _assign(raw, key.strip().split("."), yaml.safe_load(value) if value else "")
    return from_mapping(raw)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _assign(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {part} is not a mapping")
    target[path[-1]] = value


def from_mapping(raw: Mapping[str, Any]) -> MonitoringConfig:
    """Build a config from plain data (a parsed file), checking names, types and durations."""
    known = {f.name: f for f in dataclasses.fields(MonitoringConfig)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown monitoring setting(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "thresholds":
            values[name] = _thresholds(value)
        elif name == "alert_labels":
            values[name] = _labels(value)
        else:
            values[name] = _scalar(name, value)
    return MonitoringConfig(**values)


def _scalar(name: str, value: Any) -> str | bool | int | None:
    if name == "pgbouncer_max_client_conn":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{name}: expected a whole number or null, got {value!r}")
        return value
    if name == "recording_rules":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if name == "histograms" and value not in get_args(HistogramMode):
        raise ConfigError(f"histograms: expected one of {', '.join(get_args(HistogramMode))}")
    return value


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError("alert_labels: expected a mapping of strings to strings")
    return dict(value)


def _thresholds(value: Any) -> dict[str, Threshold]:
    defaults = _default_thresholds()
    if not isinstance(value, Mapping):
        raise ConfigError("thresholds: expected a mapping of alert keys")
    merged = dict(defaults)
    for key, changes in value.items():
        if key not in defaults:
            raise ConfigError(f"thresholds: unknown alert {key!r} (known: {', '.join(defaults)})")
        if not isinstance(changes, Mapping):
            raise ConfigError(f"thresholds.{key}: expected a mapping")
        try:
            merged[key] = dataclasses.replace(defaults[key], **_threshold_fields(key, changes))
        except TypeError as exc:
            raise ConfigError(f"thresholds.{key}: {exc}") from exc
    return merged


def _threshold_fields(key: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in changes.items():
        if name in {"warning", "critical"}:
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ConfigError(f"thresholds.{key}.{name}: expected a number or null")
            fields[name] = None if value is None else float(value)
        else:
            fields[name] = value
    return fields


def validate(config: MonitoringConfig) -> None:
    """Raise :class:`ConfigError` naming the first setting that cannot make sensible rules."""
    if config.histograms not in get_args(HistogramMode):
        raise ConfigError(f"histograms: expected one of {', '.join(get_args(HistogramMode))}")
    _check_durations(config)
    _check_windows(config)
    limit = config.pgbouncer_max_client_conn
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"pgbouncer_max_client_conn: expected 1 or more, got {limit!r}")
    for key, threshold in config.thresholds.items():
        _check_threshold(key, threshold)


_WINDOWS = ("rate_window", "freshness", "forecast_window", "forecast_horizon", "missing_window",
            "processes_lookback", "rule_interval", "slow_checkout")  # fmt: skip


def _check_durations(config: MonitoringConfig) -> None:
    durations = {name: getattr(config, name) for name in _WINDOWS}
    for key, threshold in config.thresholds.items():
        durations[f"thresholds.{key}.warning_for"] = threshold.warning_for
        durations[f"thresholds.{key}.critical_for"] = threshold.critical_for
    for name, value in durations.items():
        if not isinstance(value, str) or not _DURATION.match(value):
            raise ConfigError(f"{name}: expected a Prometheus duration like 5m, got {value!r}")
        if not name.endswith("_for") and not any(int(n) for n in re.findall(r"\d+", value)):
            raise ConfigError(f"{name}: must be longer than 0, got {value!r}")


def _check_windows(config: MonitoringConfig) -> None:
    """Windows that must hold at least two evaluations (or samples) to mean anything."""
    interval = seconds(config.rule_interval)
    for name in ("rate_window", "freshness", "missing_window"):
        if seconds(getattr(config, name)) < 2 * interval:
            raise ConfigError(
                f"{name}: must be at least twice rule_interval ({config.rule_interval}), "
                f"got {getattr(config, name)!r}"
            )
    if seconds(config.processes_lookback) <= seconds(config.freshness):
        raise ConfigError(
            f"processes_lookback: must be longer than freshness ({config.freshness}), "
            f"got {config.processes_lookback!r}"
        )


def _check_threshold(key: str, threshold: Threshold) -> None:
    low, high = THRESHOLD_RANGES.get(key, _NON_NEGATIVE)
    for severity in ("warning", "critical"):
        value = getattr(threshold, severity)
        if value is not None and not low <= value <= high:
            raise ConfigError(
                f"thresholds.{key}.{severity}: expected a value from {low:g} to {high:g}, "
                f"got {value:g}"
            )
    if threshold.warning is None and threshold.critical is None:
        raise ConfigError(f"thresholds.{key}: set warning, critical or both")
    if (
        threshold.warning is not None
        and threshold.critical is not None
        and threshold.warning >= threshold.critical
    ):
        raise ConfigError(
            f"thresholds.{key}.warning: must be below critical ({threshold.critical:g}), "
            f"got {threshold.warning:g}"
        )


def seconds(duration: str) -> int:
    """A Prometheus duration in whole seconds (``1h30m`` -> 5400)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total = sum(
        int(number) * units[unit] for number, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    )
    return int(total)
