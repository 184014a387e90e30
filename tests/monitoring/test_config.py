"""The monitoring config: defaults, a YAML/JSON file, then --set overrides; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poolwatch.monitoring import config


def test_defaults_have_a_threshold_for_every_alert() -> None:
    """Every alert key has warning or critical bounds and valid for-durations by default."""
    settings = config.load()
    assert settings.threshold("pool_saturation") == config.Threshold(0.8, 0.95, "5m", "2m")
    assert settings.histograms == "aggregated"


def test_file_then_flags_override_the_defaults(tmp_path: Path) -> None:
    """A JSON file overrides defaults and --set overrides the file, field by field."""
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"selector": 'cluster="a"', "histograms": "standard",
                                "thresholds": {"pending_requests": {"critical": 9}}}))  # fmt: skip

    settings = config.load(path, ['selector=cluster="b"', "alert_labels.team=db"])

    assert settings.selector == 'cluster="b"'
    assert settings.histograms == "standard"
    assert settings.alert_labels == {"team": "db"}
    assert settings.threshold("pending_requests") == config.Threshold(0.0, 9.0, "10m", "5m")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["nope=1"], "unknown monitoring setting(s): nope"),
        (["thresholds.nope.warning=1"], "thresholds: unknown alert 'nope'"),
        (["histograms=fancy"], "histograms: expected one of aggregated, standard"),
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
