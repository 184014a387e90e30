"""The facade: every ``instrument_*`` takes one ``config``, the same keyword settings overriding
it, and the same providers; a missing library names the extra to install."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from psycopg_pool import ConnectionPool

import poolwatch
from poolwatch.config import Config, ConfigKeywords
from poolwatch.testing import Capture

Configured = Callable[..., Config]


def _sqlalchemy(sqlite_url: str, providers: dict[str, Any], **settings: Any) -> Config:
    from poolwatch._integrations.sqlalchemy import ADAPTER

    engine = sa.create_engine(sqlite_url)
    try:
        poolwatch.instrument_sqlalchemy(engine, **providers, **settings)
        telemetry = ADAPTER.telemetry_of(engine)
        assert telemetry is not None
        return telemetry.config
    finally:
        poolwatch.uninstrument_sqlalchemy()
        engine.dispose()


def _psycopg_pool(_sqlite_url: str, providers: dict[str, Any], **settings: Any) -> Config:
    from poolwatch._integrations.psycopg_pool import ADAPTER

    pool: ConnectionPool = ConnectionPool("host=127.0.0.1 port=1 dbname=app", open=False)
    try:
        poolwatch.instrument_psycopg_pool(pool, **providers, **settings)
        binding = ADAPTER.binding_of(pool)
        assert binding is not None
        return binding.recorder.owner.config
    finally:
        poolwatch.uninstrument_psycopg_pool()


def _django(_sqlite_url: str, providers: dict[str, Any], **settings: Any) -> Config:
    from poolwatch._integrations.django import ADAPTER

    try:
        poolwatch.instrument_django(**providers, **settings)
        assert ADAPTER.tracker is not None
        return ADAPTER.tracker.telemetry.config
    finally:
        poolwatch.uninstrument_django()


LIBRARIES: dict[str, Configured] = {
    "sqlalchemy": _sqlalchemy,
    "psycopg_pool": _psycopg_pool,
    "django": _django,
}
FACADE = {
    "sqlalchemy": poolwatch.instrument_sqlalchemy,
    "psycopg_pool": poolwatch.instrument_psycopg_pool,
    "django": poolwatch.instrument_django,
}


@pytest.fixture(params=sorted(LIBRARIES))
def configured(
    request: pytest.FixtureRequest, sqlite_url: str, telemetry: Capture
) -> Iterator[Callable[..., Config]]:
    """Instrument one library with these settings and return the config its telemetry uses."""

    def run(**settings: Any) -> Config:
        return LIBRARIES[request.param](sqlite_url, telemetry.providers, **settings)

    yield run


def test_a_config_object_is_used_as_given(configured: Callable[..., Config]) -> None:
    """``config=`` is the whole configuration: the environment is not read over it."""
    config = Config(leak_threshold=7.0, spans=False, wait_time_buckets=(0.5, 2.0))
    assert configured(config=config) == config


def test_a_keyword_overrides_the_config_field(configured: Callable[..., Config]) -> None:
    """Keyword settings win over the fields of ``config``; the others stay as given."""
    config = Config(leak_threshold=7.0, spans=False, close_orphans=True)
    used = configured(config=config, leak_threshold=3, close_orphans="false")
    assert used == dataclasses.replace(config, leak_threshold=3.0, close_orphans=False)


def test_the_environment_is_not_read_over_a_config(
    configured: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``config``, OTEL_PYTHON_POOLWATCH_* variables do not change it."""
    monkeypatch.setenv("OTEL_PYTHON_POOLWATCH_ROOT_SPANS", "true")
    assert configured(config=Config()).root_spans is False
    assert configured().root_spans is True


def test_an_unknown_keyword_is_a_type_error(configured: Callable[..., Config]) -> None:
    """A misspelt setting fails at the call, naming it."""
    with pytest.raises(TypeError, match="leak_treshold"):
        configured(leak_treshold=3)


def test_a_config_of_another_type_is_a_type_error(configured: Callable[..., Config]) -> None:
    """``config`` takes a :class:`poolwatch.Config` only (a dict is a mistake, not settings)."""
    with pytest.raises(TypeError, match=r"config must be a poolwatch\.Config, not dict"):
        configured(config={"spans": False})


def test_every_instrument_function_takes_the_same_settings() -> None:
    """The three signatures end alike: ``config``, the providers, then ``**settings`` typed by
    :class:`~poolwatch.config.ConfigKeywords`, with the same annotations and defaults."""
    tails = {}
    for name, function in FACADE.items():
        parameters = list(inspect.signature(function).parameters.values())
        tails[name] = [(p.name, p.kind, p.annotation, p.default) for p in parameters[-5:]]
    expected = [
        ("config", inspect.Parameter.KEYWORD_ONLY, "Config | None", None),
        ("meter_provider", inspect.Parameter.KEYWORD_ONLY, "MeterProvider | None", None),
        ("tracer_provider", inspect.Parameter.KEYWORD_ONLY, "TracerProvider | None", None),
        ("logger_provider", inspect.Parameter.KEYWORD_ONLY, "LoggerProvider | None", None),
        (
            "settings",
            inspect.Parameter.VAR_KEYWORD,
            "Unpack[ConfigKeywords]",
            inspect.Parameter.empty,
        ),
    ]
    assert tails == dict.fromkeys(FACADE, expected)


def test_the_settings_are_the_fields_of_config() -> None:
    """One keyword per field, so a new field is a new keyword of every ``instrument_*``."""
    assert list(typing.get_type_hints(ConfigKeywords)) == [
        field.name for field in dataclasses.fields(Config)
    ]


def test_the_instrumentors_take_a_config(telemetry: Capture) -> None:
    """``instrument(config=...)`` of a ``BaseInstrumentor``, keywords overriding it."""
    from poolwatch._integrations.sqlalchemy import ADAPTER

    instrumentor = poolwatch.SQLAlchemyPoolInstrumentor()
    config = Config(leak_threshold=7.0, spans=False)
    instrumentor.instrument(config=config, capture_stacks=True, **telemetry.providers)
    try:
        assert ADAPTER._auto is not None
        assert ADAPTER._auto.config == dataclasses.replace(config, capture_stacks=True)
    finally:
        instrumentor.uninstrument()


MISSING = """
import sys


class NotInstalled:
    \"\"\"Finds nothing for the blocked packages, as when they are not installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in sys.argv[2:]:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())

import poolwatch

for call in (
    lambda: getattr(poolwatch, sys.argv[1])(),
    lambda: __import__("poolwatch._integrations." + sys.argv[1].removeprefix("instrument_")),
):
    try:
        call()
    except ModuleNotFoundError as error:
        print(error.name, error, sep=": ")
    else:
        print("no error")
"""


@pytest.mark.parametrize(
    ("function", "blocked", "extra", "missing"),
    [
        ("instrument_sqlalchemy", ["sqlalchemy"], "sqlalchemy", "sqlalchemy"),
        ("instrument_psycopg_pool", ["psycopg_pool"], "psycopg", "psycopg_pool"),
        ("instrument_psycopg_pool", ["psycopg"], "psycopg", "psycopg"),
        ("instrument_django", ["django"], "django", "django"),
    ],
)
def test_a_missing_library_names_the_extra_to_install(
    function: str, blocked: list[str], extra: str, missing: str
) -> None:
    """Through the facade and on importing the adapter: ``pip install 'poolwatch[<extra>]'``."""
    library = function.removeprefix("instrument_")
    done = subprocess.run(
        [sys.executable, "-c", MISSING, function, *blocked],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    hint = (
        f"{missing}: {missing} is not installed, and poolwatch's {library} integration needs "
        f"it: pip install 'poolwatch[{extra}]'"
    )
    facade, adapter = done.stdout.splitlines()
    assert facade == hint
    # Django's adapter imports no Django module: it checks when instrumenting, not on import
    assert adapter == ("no error" if library == "django" else hint)


def test_the_install_hint_leaves_other_import_errors_alone() -> None:
    """A module missing inside an installed library is not a missing extra: raised unchanged."""
    code = MISSING.replace('name.partition(".")[0]', "name")
    done = subprocess.run(
        [sys.executable, "-c", code, "instrument_sqlalchemy", "sqlalchemy.pool.base"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert (
        done.stdout.splitlines()
        == ["sqlalchemy.pool.base: No module named 'sqlalchemy.pool.base'"] * 2
    )


def test_the_pyproject_extras_exist() -> None:
    """The extras the hints name are the ones pyproject.toml declares."""
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert {"sqlalchemy", "psycopg", "django"} <= set(extras)
    assert any(spec.startswith("psycopg-pool") for spec in extras["psycopg"])
