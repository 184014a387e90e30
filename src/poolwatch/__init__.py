"""poolwatch: connection-pool trouble made visible through OpenTelemetry.

The public facade: one ``instrument_*`` function per library, the ``BaseInstrumentor`` classes
the ``opentelemetry-instrument`` launcher loads, and the configuration object. Every
``instrument_*`` takes the same settings: a ``config`` and keyword arguments overriding its fields
(:class:`poolwatch.config.ConfigKeywords`), and the OpenTelemetry providers to use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from poolwatch._instrumentors import (
    DjangoInstrumentor,
    PsycopgPoolInstrumentor,
    SQLAlchemyPoolInstrumentor,
    instrumentation_for,
)
from poolwatch._naming import APPLICATION_NAME
from poolwatch._version import __version__
from poolwatch.config import Config

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider
    from typing_extensions import Unpack

    from poolwatch._instrumentation import Instrumentation
    from poolwatch.config import ConfigKeywords

__all__ = [
    "Config",
    "DjangoInstrumentor",
    "PsycopgPoolInstrumentor",
    "SQLAlchemyPoolInstrumentor",
    "__version__",
    "instrument_django",
    "instrument_psycopg_pool",
    "instrument_sqlalchemy",
    "uninstrument_django",
    "uninstrument_psycopg_pool",
    "uninstrument_sqlalchemy",
]


def instrument_sqlalchemy(
    engine: Any = None,
    *,
    pool_name: str | None = None,
    application_name: str | None = APPLICATION_NAME,
    config: Config | None = None,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    logger_provider: LoggerProvider | None = None,
    **settings: Unpack[ConfigKeywords],
) -> None:
    """Record SQLAlchemy pools: ``engine``'s (sync or async) or, with no engine, every one.

    Without ``pool_name`` (or the engine's ``pool_logging_name``) a pool is named by its
    database, else its server, else its ``db.system.name`` (:mod:`poolwatch._naming`). PostgreSQL
    connections opened from then on get ``application_name`` (``{pool}`` stands for the pool's
    name; the default is the name alone) unless the URL, ``connect_args`` or ``PGAPPNAME`` set
    one; None leaves it unset. Settings: ``config``, its fields overridden by keyword arguments;
    without it, settings left as None come from ``OTEL_PYTHON_POOLWATCH_*`` variables, then
    defaults. Calling it again for the same engine does nothing.
    """
    from poolwatch._integrations.sqlalchemy import ADAPTER

    telemetry = _telemetry_for(config, settings, meter_provider, tracer_provider, logger_provider)
    if engine is None:
        ADAPTER.instrument_all(telemetry, application_name)
    else:
        ADAPTER.instrument_engine(engine, telemetry, pool_name, application_name)


def uninstrument_sqlalchemy(engine: Any = None) -> None:
    """Stop recording ``engine``'s pool or, with no engine, every pool; restores SQLAlchemy."""
    from poolwatch._integrations.sqlalchemy import ADAPTER

    if engine is None:
        ADAPTER.uninstrument_all()
    else:
        ADAPTER.uninstrument_engine(engine)


def instrument_psycopg_pool(
    pool: Any = None,
    *,
    pool_name: str | None = None,
    application_name: str | None = APPLICATION_NAME,
    config: Config | None = None,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    logger_provider: LoggerProvider | None = None,
    **settings: Unpack[ConfigKeywords],
) -> None:
    """Record psycopg_pool pools: ``pool`` (sync or async) or, with no pool, every one.

    Without ``pool_name`` a pool is named by its own ``name`` when set, else by its database,
    else its ``host:port`` (never the password; :mod:`poolwatch._naming`). Connections the pool
    opens from then on get ``application_name`` (``{pool}`` stands for the pool's name; the
    default is the name alone, matching ``pg_stat_activity`` rows to the metrics; PostgreSQL keeps
    63 bytes), unless the conninfo, ``kwargs`` or ``PGAPPNAME`` set one; None leaves it unset.
    Connections opened before instrumenting keep their name and are not in the create-time
    histogram. Settings as for :func:`instrument_sqlalchemy`. Calling it again for the same pool
    does nothing.
    """
    from poolwatch._integrations.psycopg_pool import ADAPTER

    telemetry = _telemetry_for(config, settings, meter_provider, tracer_provider, logger_provider)
    if pool is None:
        ADAPTER.instrument_all(telemetry, application_name)
    else:
        ADAPTER.instrument_pool(pool, telemetry, pool_name, application_name)


def uninstrument_psycopg_pool(pool: Any = None) -> None:
    """Stop recording ``pool`` or, with no pool, every pool; restores psycopg_pool."""
    from poolwatch._integrations.psycopg_pool import ADAPTER

    if pool is None:
        ADAPTER.uninstrument_all()
    else:
        ADAPTER.uninstrument_pool(pool)


def instrument_django(
    *,
    config: Config | None = None,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    logger_provider: LoggerProvider | None = None,
    **settings: Unpack[ConfigKeywords],
) -> None:
    """Track every Django database connection (all aliases) and report orphans.

    Reads no Django setting, so it may run before ``django.setup()``. PostgreSQL connections get
    ``application_name`` ``<service>:<alias>`` (``django:<alias>`` without a service name), the
    pool name of their metrics, unless they set one; Django's own pool (5.1+) is recorded as
    the psycopg pool of that name
    (``leak_threshold`` applies to that pool, ``histograms`` to it and to each alias's
    connection create times). Settings as for :func:`instrument_sqlalchemy`. Calling it again
    does nothing.
    """
    from poolwatch._integrations.django import ADAPTER

    ADAPTER.instrument(
        _telemetry_for(config, settings, meter_provider, tracer_provider, logger_provider)
    )


def uninstrument_django() -> None:
    """Stop tracking Django's connections and restore Django exactly as it was."""
    from poolwatch._integrations.django import ADAPTER

    ADAPTER.uninstrument()


def _telemetry_for(
    config: Config | None,
    settings: ConfigKeywords,
    meter_provider: MeterProvider | None,
    tracer_provider: TracerProvider | None,
    logger_provider: LoggerProvider | None,
) -> Instrumentation:
    resolved = Config.load(base=config, **settings)
    return instrumentation_for(resolved, meter_provider, tracer_provider, logger_provider)
