"""poolwatch: connection-pool trouble made visible through OpenTelemetry.

The public facade: one ``instrument_*`` function per library, the ``BaseInstrumentor`` classes
the ``opentelemetry-instrument`` launcher loads, and the configuration object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from poolwatch._version import __version__
from poolwatch.config import Config
from poolwatch.instrumentors import (
    DjangoInstrumentor,
    PsycopgPoolInstrumentor,
    SQLAlchemyPoolInstrumentor,
    telemetry_from,
)
from poolwatch.naming import APPLICATION_NAME

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry._logs import LoggerProvider
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from poolwatch.config import HistogramAggregation, HistogramMode

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
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    logger_provider: LoggerProvider | None = None,
    spans: bool | None = None,
    root_spans: bool | None = None,
    histograms: HistogramMode | None = None,
    histogram_aggregation: HistogramAggregation | None = None,
    wait_time_buckets: Sequence[float] | str | None = None,
    use_time_buckets: Sequence[float] | str | None = None,
    create_time_buckets: Sequence[float] | str | None = None,
    leak_threshold: float | None = None,
    capture_stacks: bool | None = None,
    library_packages: Sequence[str] | None = None,
    app_packages: Sequence[str] | None = None,
    conflict_window: float | None = None,
    application_name: str | None = APPLICATION_NAME,
) -> None:
    """Record SQLAlchemy pools: ``engine``'s (sync or async) or, with no engine, every one.

    Without ``pool_name`` (or the engine's ``pool_logging_name``) a pool is named by its
    database, else its server, else its ``db.system.name`` (:mod:`poolwatch.naming`). PostgreSQL
    connections opened from then on get ``application_name`` (``{pool}`` stands for the pool's
    name; the default is the name alone) unless the URL, ``connect_args`` or ``PGAPPNAME`` set
    one; None leaves it unset. Settings left as None come from ``OTEL_PYTHON_POOLWATCH_*``
    variables, then defaults. Calling it again for the same engine does nothing.
    """
    from poolwatch.integrations.sqlalchemy import ADAPTER

    telemetry = telemetry_from(
        {
            "meter_provider": meter_provider,
            "tracer_provider": tracer_provider,
            "logger_provider": logger_provider,
            "spans": spans,
            "root_spans": root_spans,
            "histograms": histograms,
            "histogram_aggregation": histogram_aggregation,
            "wait_time_buckets": wait_time_buckets,
            "use_time_buckets": use_time_buckets,
            "create_time_buckets": create_time_buckets,
            "leak_threshold": leak_threshold,
            "capture_stacks": capture_stacks,
            "library_packages": library_packages,
            "app_packages": app_packages,
            "conflict_window": conflict_window,
        }
    )
    if engine is None:
        ADAPTER.instrument_all(telemetry, application_name)
    else:
        ADAPTER.instrument_engine(engine, telemetry, pool_name, application_name)


def uninstrument_sqlalchemy(engine: Any = None) -> None:
    """Stop recording ``engine``'s pool or, with no engine, every pool; restores SQLAlchemy."""
    from poolwatch.integrations.sqlalchemy import ADAPTER

    if engine is None:
        ADAPTER.uninstrument_all()
    else:
        ADAPTER.uninstrument_engine(engine)


def instrument_psycopg_pool(
    pool: Any = None,
    *,
    pool_name: str | None = None,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    logger_provider: LoggerProvider | None = None,
    spans: bool | None = None,
    root_spans: bool | None = None,
    histograms: HistogramMode | None = None,
    histogram_aggregation: HistogramAggregation | None = None,
    wait_time_buckets: Sequence[float] | str | None = None,
    use_time_buckets: Sequence[float] | str | None = None,
    create_time_buckets: Sequence[float] | str | None = None,
    leak_threshold: float | None = None,
    capture_stacks: bool | None = None,
    library_packages: Sequence[str] | None = None,
    app_packages: Sequence[str] | None = None,
    application_name: str | None = APPLICATION_NAME,
) -> None:
    """Record psycopg_pool pools: ``pool`` (sync or async) or, with no pool, every one.

    Without ``pool_name`` a pool is named by its own ``name`` when set, else by its database,
    else its ``host:port`` (never the password; :mod:`poolwatch.naming`). Connections the pool
    opens from then on get ``application_name`` (``{pool}`` stands for the pool's name; the
    default is the name alone, matching ``pg_stat_activity`` rows to the metrics; PostgreSQL keeps
    63 bytes), unless the conninfo, ``kwargs`` or ``PGAPPNAME`` set one; None leaves it unset.
    Connections opened before instrumenting keep their name and are not in the create-time
    histogram. Calling it again for the same pool does nothing.
    """
    from poolwatch.integrations.psycopg_pool import ADAPTER

    telemetry = telemetry_from(
        {
            "meter_provider": meter_provider,
            "tracer_provider": tracer_provider,
            "logger_provider": logger_provider,
            "spans": spans,
            "root_spans": root_spans,
            "histograms": histograms,
            "histogram_aggregation": histogram_aggregation,
            "wait_time_buckets": wait_time_buckets,
            "use_time_buckets": use_time_buckets,
            "create_time_buckets": create_time_buckets,
            "leak_threshold": leak_threshold,
            "capture_stacks": capture_stacks,
            "library_packages": library_packages,
            "app_packages": app_packages,
        }
    )
    if pool is None:
        ADAPTER.instrument_all(telemetry, application_name)
    else:
        ADAPTER.instrument_pool(pool, telemetry, pool_name, application_name)


def uninstrument_psycopg_pool(pool: Any = None) -> None:
    """Stop recording ``pool`` or, with no pool, every pool; restores psycopg_pool."""
    from poolwatch.integrations.psycopg_pool import ADAPTER

    if pool is None:
        ADAPTER.uninstrument_all()
    else:
        ADAPTER.uninstrument_pool(pool)


def instrument_django(
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    logger_provider: LoggerProvider | None = None,
    histograms: HistogramMode | None = None,
    histogram_aggregation: HistogramAggregation | None = None,
    wait_time_buckets: Sequence[float] | str | None = None,
    use_time_buckets: Sequence[float] | str | None = None,
    create_time_buckets: Sequence[float] | str | None = None,
    leak_threshold: float | None = None,
    capture_stacks: bool | None = None,
    library_packages: Sequence[str] | None = None,
    app_packages: Sequence[str] | None = None,
    django_idle_in_transaction: float | None = None,
    django_idle_outside_request: float | None = None,
    close_orphans: bool | None = None,
    django_application_name: bool | None = None,
) -> None:
    """Track every Django database connection (all aliases) and report orphans.

    Reads no Django setting, so it may run before ``django.setup()``. PostgreSQL connections get
    ``application_name`` ``<service>:<alias>`` (``django:<alias>`` without a service name), the
    pool name of their metrics, unless they set one; Django's own pool (5.1+) is recorded as
    the psycopg pool of that name
    (``leak_threshold`` applies to that pool, ``histograms`` to it and to each alias's
    connection create times). Settings left as None come from ``OTEL_PYTHON_POOLWATCH_*``
    variables, then defaults. Calling it again does nothing.
    """
    from poolwatch.integrations.django import ADAPTER

    telemetry = telemetry_from(
        {
            "meter_provider": meter_provider,
            "tracer_provider": tracer_provider,
            "logger_provider": logger_provider,
            "histograms": histograms,
            "histogram_aggregation": histogram_aggregation,
            "wait_time_buckets": wait_time_buckets,
            "use_time_buckets": use_time_buckets,
            "create_time_buckets": create_time_buckets,
            "leak_threshold": leak_threshold,
            "capture_stacks": capture_stacks,
            "library_packages": library_packages,
            "app_packages": app_packages,
            "django_idle_in_transaction": django_idle_in_transaction,
            "django_idle_outside_request": django_idle_outside_request,
            "close_orphans": close_orphans,
            "django_application_name": django_application_name,
        }
    )
    ADAPTER.instrument(telemetry)


def uninstrument_django() -> None:
    """Stop tracking Django's connections and restore Django exactly as it was."""
    from poolwatch.integrations.django import ADAPTER

    ADAPTER.uninstrument()
