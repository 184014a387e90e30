"""The monitoring config: defaults, a YAML/JSON file, then --set overrides; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poolwatch.monitoring import alerts, config


def test_defaults_have_a_threshold_for_every_alert() -> None:
    """Every alert key has warning or critical bounds and valid for-durations by default."""
    settings = config.load()
    assert settings.threshold("pool_saturation") == config.Threshold(0.8, 0.95, "5m", "5m")
    assert settings.histograms == "classic"
    # The PgBouncer client-connections alert needs max_client_conn, which has no default.
    assert set(settings.thresholds) == {d.key for d in alerts.definitions(settings)} | {
        "pgbouncer_client_connections"
    }
    limited = config.load(overrides=["pgbouncer_max_client_conn=500"])
    assert set(limited.thresholds) == {d.key for d in alerts.definitions(limited)}


def test_file_then_flags_override_the_defaults(tmp_path: Path) -> None:
    """A JSON file overrides defaults and --set overrides the file, field by field."""
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"selector": 'cluster="a"', "histograms": "native",
                                "thresholds": {"pending_requests": {"critical": 9}}}))  # fmt: skip

    settings = config.load(path, ['selector=cluster="b"', "alert_labels.team=db"])

    assert settings.selector == 'cluster="b"'
    assert settings.histograms == "native"
    assert settings.alert_labels == {"team": "db"}
    assert settings.threshold("pending_requests") == config.Threshold(0.0, 9.0, "10m", "5m")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["nope=1"], "unknown monitoring setting(s): nope"),
        (["thresholds.nope.warning=1"], "thresholds: unknown alert 'nope'"),
        (["histograms=fancy"], "histograms: expected one of classic, native"),
        (
            ["thresholds.pool_saturation.critical=0.7"],
            "thresholds.pool_saturation.warning: must be below critical (0.7), got 0.8",
        ),
        (
            ["thresholds.fleet_saturation.warning=-0.1"],
            "thresholds.fleet_saturation.warning: expected a value from 0 to 1, got -0.1",
        ),
        (["thresholds.pending_requests.warning=true"], "expected a number or null"),
        (
            ["thresholds.internal_errors.warning=null"],
            "thresholds.internal_errors: set warning, critical or both",
        ),
        (
            ["thresholds.wait_time_p99.warning_for=soon"],
            "thresholds.wait_time_p99.warning_for: expected a Prometheus duration",
        ),
        (["rule_interval=5m"], "rate_window: must be at least twice rule_interval"),
        (["processes_lookback=1m"], "processes_lookback: must be longer than freshness"),
        (["recording_rules=maybe"], "recording_rules: expected true or false"),
        (["pgbouncer_max_client_conn=lots"], "pgbouncer_max_client_conn: expected a whole number"),
        (["pgbouncer_max_client_conn=0"], "pgbouncer_max_client_conn: expected 1 or more, got 0"),
        (["rate_window=5 minutes"], "rate_window: expected a Prometheus duration"),
        (["thresholds.pool_saturation.warning=high"], "expected a number or null"),
        (["selector"], "--set expects key=value"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(overrides: list[str], message: str) -> None:
    """An unknown key, a bad value or a malformed flag raises ConfigError saying which."""
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load(None, overrides)


def test_seconds_reads_prometheus_durations() -> None:
    """Compound durations add up."""
    assert config.seconds("1h30m") == 5400


def test_a_config_built_in_code_is_checked_too() -> None:
    """MonitoringConfig itself refuses a warning above its critical, naming the field."""
    bad = {"pool_saturation": config.Threshold(0.99, 0.95)}
    with pytest.raises(config.ConfigError, match=r"thresholds\.pool_saturation\.warning"):
        config.MonitoringConfig(thresholds=bad)
