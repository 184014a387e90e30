"""Configuration: keyword arguments, then OTEL_PYTHON_POOLWATCH_* variables, then defaults."""

from __future__ import annotations

import logging

import pytest

from poolwatch import _state, catalog
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
    _state.warned.clear()
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


def test_bounds_given_as_an_argument_are_checked_like_the_environment_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sequence or a string is read; bounds that do not increase warn and keep the default."""
    _state.warned.clear()
    assert Config.load(environ={}, use_time_buckets=[2, 5]).use_time_buckets == (2.0, 5.0)
    assert Config.load(environ={}, use_time_buckets="off").use_time_buckets == ()
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        config = Config.load(environ={}, wait_time_buckets=[1.0, 1.0])
    assert config.wait_time_buckets == catalog.WAIT_BUCKETS
    (record,) = caplog.records
    assert "wait_time_buckets: bounds must be finite, above zero and increasing" in (
        record.getMessage()
    )
    with pytest.raises(ValueError, match="create_time_buckets"):
        Config(create_time_buckets=(0.5, 0.1))


@pytest.mark.parametrize(
    ("keywords", "expected"),
    [
        ({"leak_threshold": "5"}, Config(leak_threshold=5.0)),
        ({"spans": "false"}, Config(spans=False)),
        ({"histograms": " Standard "}, Config(histograms="standard")),
        ({"leak_threshold": 5}, Config(leak_threshold=5.0)),
    ],
)
def test_keyword_strings_are_read_as_the_environment_reads_them(
    keywords: dict[str, object], expected: Config
) -> None:
    """``spans="false"`` turns spans off and ``leak_threshold="5"`` is five seconds, no error."""
    assert Config.load(environ={}, **keywords) == expected


@pytest.mark.parametrize(
    ("keyword", "value", "default"),
    [
        ("leak_threshold", "soon", "30.0"),
        ("leak_threshold", -1, "30.0"),
        ("leak_threshold", float("nan"), "30.0"),
        ("spans", "maybe", "True"),
        ("spans", 1, "True"),
        ("histograms", "exponential", "'otlp'"),
        ("conflict_window", [60], "60.0"),
    ],
)
def test_a_bad_keyword_warns_naming_the_setting_and_the_default(
    caplog: pytest.LogCaptureFixture, keyword: str, value: object, default: str
) -> None:
    """A wrong type or value in code is a warning and the default, never an exception."""
    _state.warned.clear()
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        config = Config.load(environ={}, **{keyword: value})
    assert config == Config()
    (record,) = caplog.records
    message = record.getMessage()
    assert f"keyword argument {keyword}={value!r}" in message
    assert f"using the default {default}" in message


def test_a_bad_keyword_falls_back_to_the_environment(caplog: pytest.LogCaptureFixture) -> None:
    """When the keyword is unusable the variable still applies, and the warning says so."""
    _state.warned.clear()
    environ = {"OTEL_PYTHON_POOLWATCH_LEAK_THRESHOLD": "7"}
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        config = Config.load(environ=environ, leak_threshold="later")
    assert config.leak_threshold == 7.0
    assert "using the environment's 7.0" in caplog.records[0].getMessage()
