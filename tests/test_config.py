"""Configuration: keyword arguments, then OTEL_PYTHON_POOLWATCH_* variables, then defaults."""

from __future__ import annotations

import logging

import pytest

from poolwatch import catalog
from poolwatch import config as config_module
from poolwatch.config import Config


def test_defaults() -> None:
    """With nothing set: spans inside traces only, OTLP histograms with the catalog's bounds."""
    config = Config.load(environ={})
    assert config == Config(spans=True, root_spans=False, histograms="otlp")
    assert (config.histogram_aggregation, config.wait_time_buckets) == (
        "explicit",
        catalog.WAIT_BUCKETS,
    )


def test_environment_overrides_defaults() -> None:
    """Variables are read by field name."""
    environ = {
        "OTEL_PYTHON_POOLWATCH_SPANS": "false",
        "OTEL_PYTHON_POOLWATCH_ROOT_SPANS": "TRUE",
        "OTEL_PYTHON_POOLWATCH_HISTOGRAMS": "Standard",
    }
    assert Config.load(environ=environ) == Config(
        spans=False, root_spans=True, histograms="standard"
    )


def test_keyword_arguments_override_the_environment() -> None:
    """An explicit argument wins; None means "not given"."""
    environ = {"OTEL_PYTHON_POOLWATCH_SPANS": "false", "OTEL_PYTHON_POOLWATCH_ROOT_SPANS": "true"}
    config = Config.load(environ=environ, spans=True, root_spans=None)
    assert (config.spans, config.root_spans) == (True, True)


@pytest.mark.parametrize(
    ("variable", "value", "default"),
    [
        ("OTEL_PYTHON_POOLWATCH_SPANS", "maybe", "True"),
        ("OTEL_PYTHON_POOLWATCH_HISTOGRAMS", "exponential", "'otlp'"),
        ("OTEL_PYTHON_POOLWATCH_HISTOGRAM_AGGREGATION", "native", "'explicit'"),
        ("OTEL_PYTHON_POOLWATCH_WAIT_TIME_BUCKETS", "1,0.5", repr(catalog.WAIT_BUCKETS)),
        ("OTEL_PYTHON_POOLWATCH_USE_TIME_BUCKETS", "0.1,inf", repr(catalog.USE_BUCKETS)),
        ("OTEL_PYTHON_POOLWATCH_CREATE_TIME_BUCKETS", "fast", repr(catalog.CREATE_BUCKETS)),
    ],
)
def test_a_bad_value_warns_once_naming_the_variable_and_the_default(
    caplog: pytest.LogCaptureFixture, variable: str, value: str, default: str
) -> None:
    """The warning names the variable, the bad value and the default used; nothing raises."""
    config_module._warned.clear()
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        config = Config.load(environ={variable: value})
        assert Config.load(environ={variable: value}) == config  # a second load stays quiet
    assert config == Config()
    (record,) = caplog.records
    message = record.getMessage()
    assert variable in message
    assert repr(value) in message
    assert f"using the default {default}" in message


def test_an_unknown_keyword_is_a_type_error() -> None:
    """A misspelt setting in code fails loudly at instrument time."""
    with pytest.raises(TypeError, match="root_span"):
        Config.load(environ={}, root_span=True)


def test_bucket_bounds_come_from_the_environment_and_off_keeps_only_count_and_sum() -> None:
    """Comma-separated seconds per histogram; ``off`` is no bounds at all."""
    environ = {
        "OTEL_PYTHON_POOLWATCH_WAIT_TIME_BUCKETS": "0.01, 0.1,1",
        "OTEL_PYTHON_POOLWATCH_USE_TIME_BUCKETS": "off",
        "OTEL_PYTHON_POOLWATCH_HISTOGRAM_AGGREGATION": "Exponential",
    }
    config = Config.load(environ=environ)
    assert config.wait_time_buckets == (0.01, 0.1, 1.0)
    assert config.use_time_buckets == ()
    assert config.create_time_buckets == catalog.CREATE_BUCKETS
    assert config.histogram_aggregation == "exponential"


def test_bad_bounds_given_as_an_argument_raise_naming_the_setting() -> None:
    """A keyword argument is code, not an environment: it fails loudly."""
    with pytest.raises(ValueError, match="wait_time_buckets: bounds must be finite"):
        Config.load(environ={}, wait_time_buckets=[1.0, 1.0])
    assert Config.load(environ={}, use_time_buckets=[2, 5]).use_time_buckets == (2.0, 5.0)
