"""``BaseInstrumentor`` classes, the entry points the ``opentelemetry-instrument`` launcher loads."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from poolwatch import naming
from poolwatch.config import Config
from poolwatch.telemetry import Telemetry, forget_shared, telemetry_for

_logger = logging.getLogger("poolwatch")

SQLALCHEMY_REQUIREMENT = "sqlalchemy >= 2.0, < 2.2"


def telemetry_from(kwargs: dict[str, Any]) -> Telemetry:
    """The shared telemetry for the providers and settings passed to ``instrument()``."""
    fields = Config.__dataclass_fields__
    config = Config.load(**{key: value for key, value in kwargs.items() if key in fields})
    return telemetry_for(
        config,
        kwargs.get("meter_provider"),
        kwargs.get("tracer_provider"),
        kwargs.get("logger_provider"),
    )


def dependencies_missing(requirements: Collection[str], name: str) -> bool:
    """Check our own requirements even when the launcher said to skip the check.

    The launcher checks the whole distribution once (any one supported library is enough), so
    each instrumentor checks the library it needs before importing it.
    """
    conflict = get_dependency_conflicts(list(requirements))
    if conflict is not None:
        _logger.debug("poolwatch: not instrumenting %s: %s", name, conflict)
        return True
    return False


class SQLAlchemyPoolInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Records every SQLAlchemy pool the process creates (sync and async engines)."""

    _telemetry: Telemetry | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return (SQLALCHEMY_REQUIREMENT,)

    def _instrument(self, **kwargs: Any) -> None:
        if dependencies_missing(self.instrumentation_dependencies(), "sqlalchemy"):
            return
        from poolwatch.integrations.sqlalchemy import ADAPTER

        self._telemetry = telemetry_from(kwargs)
        ADAPTER.instrument_all(self._telemetry)

    def _uninstrument(self, **kwargs: Any) -> None:
        from poolwatch.integrations.sqlalchemy import ADAPTER

        ADAPTER.uninstrument_all()
        if self._telemetry is not None:
            forget_shared(self._telemetry)
            self._telemetry = None


PSYCOPG_POOL_REQUIREMENT = "psycopg-pool >= 3.1, < 4"


class PsycopgPoolInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Records every psycopg_pool ``ConnectionPool`` and ``AsyncConnectionPool`` from its first checkout."""

    _telemetry: Telemetry | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return (PSYCOPG_POOL_REQUIREMENT,)

    def _instrument(self, **kwargs: Any) -> None:
        if dependencies_missing(self.instrumentation_dependencies(), "psycopg_pool"):
            return
        from poolwatch.integrations.psycopg_pool import ADAPTER

        self._telemetry = telemetry_from(kwargs)
        ADAPTER.instrument_all(
            self._telemetry, kwargs.get("application_name", naming.APPLICATION_NAME)
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        from poolwatch.integrations.psycopg_pool import ADAPTER

        ADAPTER.uninstrument_all()
        if self._telemetry is not None:
            forget_shared(self._telemetry)
            self._telemetry = None


DJANGO_REQUIREMENT = "django >= 4.2, < 6"


class DjangoInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Tracks every Django database connection, finds orphans and names connections in PostgreSQL.

    Loading it imports Django's modules but reads no setting: ``DJANGO_SETTINGS_MODULE`` is
    read by the application, as always.
    """

    _telemetry: Telemetry | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return (DJANGO_REQUIREMENT,)

    def _instrument(self, **kwargs: Any) -> None:
        if dependencies_missing(self.instrumentation_dependencies(), "django"):
            return
        from poolwatch.integrations.django import ADAPTER

        self._telemetry = telemetry_from(kwargs)
        ADAPTER.instrument(self._telemetry)

    def _uninstrument(self, **kwargs: Any) -> None:
        from poolwatch.integrations.django import ADAPTER

        ADAPTER.uninstrument()
        if self._telemetry is not None:
            forget_shared(self._telemetry)
            self._telemetry = None
