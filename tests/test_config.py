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
