"""Configuration: keyword arguments, then OTEL_PYTHON_POOLWATCH_* variables, then defaults."""

from __future__ import annotations

import logging

import pytest

from poolwatch import config as config_module
from poolwatch.config import Config


def test_defaults() -> None:
    """With nothing set: spans inside traces only, aggregated histograms."""
    assert Config.load(environ={}) == Config(spans=True, root_spans=False, histograms="aggregated")


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
        ("OTEL_PYTHON_POOLWATCH_HISTOGRAMS", "exponential", "'aggregated'"),
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
        ("histograms", "exponential", "'aggregated'"),
        ("conflict_window", [60], "60.0"),
    ],
)
def test_a_bad_keyword_warns_naming_the_setting_and_the_default(
    caplog: pytest.LogCaptureFixture, keyword: str, value: object, default: str
) -> None:
    """A wrong type or value in code is a warning and the default, never an exception."""
    config_module._warned.clear()
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        config = Config.load(environ={}, **{keyword: value})
    assert config == Config()
    (record,) = caplog.records
    message = record.getMessage()
    assert f"keyword argument {keyword}={value!r}" in message
    assert f"using the default {default}" in message


def test_a_bad_keyword_falls_back_to_the_environment(caplog: pytest.LogCaptureFixture) -> None:
    """When the keyword is unusable the variable still applies, and the warning says so."""
    config_module._warned.clear()
    environ = {"OTEL_PYTHON_POOLWATCH_LEAK_THRESHOLD": "7"}
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        config = Config.load(environ=environ, leak_threshold="later")
    assert config.leak_threshold == 7.0
    assert "using the environment's 7.0" in caplog.records[0].getMessage()
