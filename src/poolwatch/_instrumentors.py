"""``BaseInstrumentor`` classes, the entry points the ``opentelemetry-instrument`` launcher loads."""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Collection, Mapping
from typing import Any, Final

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from poolwatch import _naming, _state
from poolwatch._instrumentation import Instrumentation
from poolwatch._integrations._extras import hint
from poolwatch._recorder import Settings
from poolwatch._telemetry import Telemetry
from poolwatch.config import Config

_logger = logging.getLogger("poolwatch")


def instrumentation_for(
    config: Config,
    meter_provider: Any = None,
    tracer_provider: Any = None,
    logger_provider: Any = None,
) -> Instrumentation:
    """The one live instrumentation for these settings and providers: made once (its
    instruments with it), shared by every adapter and ``instrument_*`` call that uses them."""

    clock = _state.clock

    def make() -> Instrumentation:
        telemetry = Telemetry(config, meter_provider, tracer_provider, logger_provider)
        settings = Settings(config, telemetry.exponential, telemetry.standard_histograms, clock)
        instrumentation = Instrumentation(config, telemetry, settings)
        telemetry.read_pools(instrumentation.pools, instrumentation.drop)
        return instrumentation

    key = (config, meter_provider, tracer_provider, logger_provider, clock)
    return _state.shared(key, make)  # type: ignore[no-any-return]


def telemetry_from(kwargs: Mapping[str, Any]) -> Instrumentation:
    """The shared instrumentation for the providers and settings passed to ``instrument()``.

    ``instrument()`` takes what ``instrument_*()`` takes (``config``, settings, providers), and
    the launcher's own keyword arguments too (``raise_exception_on_conflict``), left alone here.
    """
    settings = {key: value for key, value in kwargs.items() if key in _SETTINGS}
    config = Config.load(base=kwargs.get("config"), **settings)
    return instrumentation_for(
        config,
        kwargs.get("meter_provider"),
        kwargs.get("tracer_provider"),
        kwargs.get("logger_provider"),
    )


_SETTINGS: Final = frozenset(field.name for field in dataclasses.fields(Config))


def dependencies_missing(requirements: Collection[str], name: str, extra: str = "") -> bool:
    """Check our own requirements even when the launcher said to skip the check.

    The launcher checks the whole distribution once (any one supported library is enough), so
    each instrumentor checks the library it needs before importing it, quietly (the launcher
    loads every instrumentor of the distribution): the install hint is logged at debug level.
    """
    conflict = get_dependency_conflicts(list(requirements))
    if conflict is not None:
        found = f" ({hint(name, extra)})" if extra else ""
        _logger.debug("poolwatch: not instrumenting %s: %s%s", name, conflict, found)
        return True
    return False


class _Instrumentor(BaseInstrumentor):  # type: ignore[misc]
    """What the three instrumentors share: their own dependency check, one shared telemetry for
    the launcher's providers and settings, and giving it back when uninstrumented."""

    _requirement = ""
    _library = ""
    #: The extra of pyproject.toml that installs the library.
    _extra = ""
    _telemetry: Instrumentation | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return (self._requirement,)

    def _instrument(self, **kwargs: Any) -> None:
        if dependencies_missing(self.instrumentation_dependencies(), self._library, self._extra):
            return
        self._telemetry = telemetry_from(kwargs)
        self._start(self._telemetry, kwargs)

    def _uninstrument(self, **kwargs: Any) -> None:
        self._stop()
        if self._telemetry is not None:
            _state.forget(self._telemetry)
            self._telemetry = None

    def _start(self, telemetry: Instrumentation, kwargs: dict[str, Any]) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError


SQLALCHEMY_REQUIREMENT = "sqlalchemy >= 2.0, < 2.2"
PSYCOPG_POOL_REQUIREMENT = "psycopg-pool >= 3.1, < 4"
DJANGO_REQUIREMENT = "django >= 4.2, < 6"


class _PoolInstrumentor(_Instrumentor):
    """An instrumentor of a pool library: its adapter (``ADAPTER`` of :attr:`_adapter`) records
    every pool."""

    #: The module of the library's pool adapter (imported when instrumenting starts).
    _adapter: str

    def _start(self, telemetry: Instrumentation, kwargs: dict[str, Any]) -> None:
        adapter = importlib.import_module(self._adapter).ADAPTER
        adapter.instrument_all(telemetry, kwargs.get("application_name", _naming.APPLICATION_NAME))

    def _stop(self) -> None:
        importlib.import_module(self._adapter).ADAPTER.uninstrument_all()


class SQLAlchemyPoolInstrumentor(_PoolInstrumentor):
    """Records every SQLAlchemy pool the process creates (sync and async engines)."""

    _requirement = SQLALCHEMY_REQUIREMENT
    _library = "sqlalchemy"
    _extra = "sqlalchemy"
    _adapter = "poolwatch._integrations.sqlalchemy"


class PsycopgPoolInstrumentor(_PoolInstrumentor):
    """Records every psycopg_pool ``ConnectionPool`` and ``AsyncConnectionPool`` from its first checkout."""

    _requirement = PSYCOPG_POOL_REQUIREMENT
    _library = "psycopg_pool"
    _extra = "psycopg"
    _adapter = "poolwatch._integrations.psycopg_pool"


class DjangoInstrumentor(_Instrumentor):
    """Tracks every Django database connection, finds orphans and names connections in PostgreSQL.

    It patches Django's classes as their modules are imported and reads no setting:
    ``DJANGO_SETTINGS_MODULE`` is read by the application, as always.
    """

    _requirement = DJANGO_REQUIREMENT
    _library = "django"
    _extra = "django"

    def _start(self, telemetry: Instrumentation, kwargs: dict[str, Any]) -> None:
        from poolwatch._integrations.django import ADAPTER

        ADAPTER.instrument(telemetry)

    def _stop(self) -> None:
        from poolwatch._integrations.django import ADAPTER

        ADAPTER.uninstrument()
