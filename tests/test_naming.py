"""Pool names: one registry for every adapter, stable, unique in a process, never a password."""

from __future__ import annotations

import gc
import logging
import os
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import poolwatch
from poolwatch import catalog
from poolwatch._naming import REGISTRY, NameRegistry, Target, dsn_target, url_target
from poolwatch.testing import Capture


@pytest.mark.parametrize(
    ("url", "attributes", "name"),
    [
        (
            "postgresql+psycopg://app:s3cret@db.internal:6432/orders",
            {
                catalog.DB_SYSTEM: "postgresql",
                catalog.DB_NAMESPACE: "orders",
                catalog.SERVER_ADDRESS: "db.internal",
                catalog.SERVER_PORT: 6432,
            },
            "orders",
        ),
        (
            "postgresql://app:s3cret@db/orders?password=s3cret&sslmode=require",
            {
                catalog.DB_SYSTEM: "postgresql",
                catalog.DB_NAMESPACE: "orders",
                catalog.SERVER_ADDRESS: "db",
                catalog.SERVER_PORT: 5432,
            },
            "orders",
        ),
        (
            "mysql+pymysql://root:s3cret@127.0.0.1",
            {
                catalog.DB_SYSTEM: "mysql",
                catalog.SERVER_ADDRESS: "127.0.0.1",
                catalog.SERVER_PORT: 3306,
            },
            "127.0.0.1:3306",
        ),
        (
            "sqlite:////var/lib/app/app.db",
            {catalog.DB_SYSTEM: "sqlite", catalog.DB_NAMESPACE: "/var/lib/app/app.db"},
            "/var/lib/app/app.db",
        ),
        ("sqlite://", {catalog.DB_SYSTEM: "sqlite"}, "sqlite"),
        ("mssql+pyodbc://sa:s3cret@sql/erp", None, "erp"),
    ],
)
def test_unnamed_pools_are_named_namespace_then_server_then_system(
    url: str, attributes: dict[str, object] | None, name: str
) -> None:
    """The convention's order for unnamed pools, with the identity attributes and no secret."""
    target = url_target(make_url(url))
    if attributes is not None:
        assert target.attributes() == attributes
    assert target.derived_name("sqlalchemy") == name
    assert "s3cret" not in repr(target)


def test_a_pool_with_no_known_database_is_named_after_its_library() -> None:
    """Last in the order: the library's name, with ``db.system.name`` ``other_sql``."""
    target = Target.unknown()
    assert target.derived_name("sqlalchemy") == "sqlalchemy"
    assert target.attributes() == {catalog.DB_SYSTEM: "other_sql"}


def test_libpq_targets_fill_the_default_port_and_drop_the_password() -> None:
    """A conninfo without a port reports 5432; the password goes nowhere."""
    target = dsn_target("host=db.internal user=app password=s3cret dbname=orders")
    assert target == Target("postgresql", "orders", "db.internal", 5432)


def test_the_same_url_gives_the_same_name_every_time() -> None:
    """Names do not depend on object ids or time, so they are stable across restarts."""
    url = make_url("postgresql://app:pw@db:5432/orders")
    assert url_target(url) == url_target(make_url(str(url)))


class Owner:
    """A stand-in pool: ``opened`` connections ever, ``open_now`` of them open now."""

    def __init__(self, opened: int = 0, open_now: int = 0) -> None:
        self.opened = opened
        self.open_now = open_now
        self.renamed: list[str] = []

    def drained(self) -> bool:
        return self.opened > 0 and self.open_now == 0

    def rename(self, name: str) -> None:
        self.renamed.append(name)


def test_pools_of_one_library_on_one_database_get_numbers() -> None:
    """The second claimant of a name gets ``#2``, the third ``#3``."""
    registry = NameRegistry()
    owners = [Owner(1, 1), Owner(1, 1), Owner(1, 1)]
    names = [registry.claim("db", owner, "sqlalchemy") for owner in owners]
    assert names == ["db", "db#2", "db#3"]


def test_pools_of_two_libraries_on_one_database_are_told_apart_by_library() -> None:
    """An SQLAlchemy engine and a psycopg pool on one database never share a series."""
    registry = NameRegistry()
    engine, pool, second_pool = Owner(1, 1), Owner(1, 1), Owner(1, 1)
    assert registry.claim("orders", engine, "sqlalchemy") == "orders"
    assert registry.claim("orders", pool, "psycopg_pool") == "orders#psycopg_pool"
    assert registry.claim("orders", second_pool, "psycopg_pool") == "orders#psycopg_pool#2"


def test_a_drained_pool_gives_its_name_to_the_next_one() -> None:
    """A migration engine that connected and closed everything does not push the app to ``#2``."""
    registry = NameRegistry()
    migrations, app = Owner(opened=1, open_now=0), Owner(opened=1, open_now=1)
    assert registry.claim("orders", migrations, "sqlalchemy") == "orders"
    assert registry.claim("orders", app, "sqlalchemy") == "orders"
    assert migrations.renamed == ["orders#2"]
    assert registry.names() == {"orders": "sqlalchemy", "orders#2": "sqlalchemy"}


def test_a_pool_that_never_connected_keeps_its_name() -> None:
    """An app engine made at import keeps its name when a migration engine comes later."""
    registry = NameRegistry()
    app, migrations = Owner(), Owner(opened=1, open_now=1)
    assert registry.claim("orders", app, "sqlalchemy") == "orders"
    assert registry.claim("orders", migrations, "sqlalchemy") == "orders#2"
    assert app.renamed == []


def test_explicit_names_are_kept_and_a_duplicate_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user's name is used as is; two pools given one name are told apart, loudly."""
    registry = NameRegistry()
    first, second = Owner(1, 1), Owner(1, 1)
    assert registry.claim("reports", first, "sqlalchemy", explicit=True) == "reports"
    with caplog.at_level(logging.WARNING, logger="poolwatch"):
        assert registry.claim("reports", second, "sqlalchemy", explicit=True) == "reports#2"
    assert "two pools are named 'reports'" in caplog.text


def test_a_released_name_is_reused() -> None:
    """Re-creating an engine does not grow the set of names."""
    registry = NameRegistry()
    first = Owner(1, 1)
    assert registry.claim("db", first) == "db"
    registry.release(first)
    assert registry.claim("db", Owner(1, 1)) == "db"
    second = Owner(1, 1)
    registry.claim("other", second)
    del second
    gc.collect()
    assert registry.claim("other", Owner(1, 1)) == "other"


def test_engines_on_one_database_get_distinct_names(sqlite_url: str) -> None:
    """Two engines on the same database are two pools, and are reported as two."""
    poolwatch.instrument_sqlalchemy()
    first = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool)
    second = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool)
    named = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool, pool_logging_name="reports")
    names = [e.pool._poolwatch_recorder.name for e in (first, second, named)]
    path = make_url(sqlite_url).database
    assert names == [path, f"{path}#2", "reports"]


@pytest.mark.parametrize("dispose", [True, False], ids=["disposed", "left-for-gc"])
def test_a_migration_engine_does_not_rename_the_app_engine(
    telemetry: Capture, tmp_path: Path, dispose: bool
) -> None:
    """Migrate, then serve: the app's engine gets the plain name, whether or not the migration
    engine was disposed (a ``NullPool`` engine left for the garbage collector has no connection
    open either)."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    poolwatch.instrument_sqlalchemy(**telemetry.providers)
    migrations = sa.create_engine(url, poolclass=sa.pool.QueuePool if dispose else sa.pool.NullPool)
    with migrations.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    if dispose:
        migrations.dispose()
    app = sa.create_engine(url, poolclass=sa.pool.QueuePool)
    with app.connect() as connection:
        connection.exec_driver_sql("SELECT x FROM t")
    path = str(tmp_path / "app.db")
    assert app.pool._poolwatch_recorder.name == path
    assert migrations.pool._poolwatch_recorder.name == f"{path}#2"
    assert (
        telemetry.value(
            catalog.CONNECTION_COUNT.name,
            db_client_connection_pool_name=path,
            attributes={catalog.STATE: "idle"},
        )
        == 1
    )


def test_a_dropped_migration_engine_does_not_rename_the_app_engine(
    telemetry: Capture, tmp_path: Path
) -> None:
    """A QueuePool migration engine dropped with an idle connection (unreachable, waiting for a
    garbage collection) does not push the app's engine to ``#2``."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    poolwatch.instrument_sqlalchemy(**telemetry.providers)

    def migrate() -> None:
        migrations = sa.create_engine(url, poolclass=sa.pool.QueuePool)
        with migrations.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")

    gc.disable()  # as if the collector had not come round yet
    try:
        migrate()
        app = sa.create_engine(url, poolclass=sa.pool.QueuePool)
    finally:
        gc.enable()
    assert app.pool._poolwatch_recorder.name == str(tmp_path / "app.db")


def test_every_adapter_names_through_one_registry(sqlite_url: str) -> None:
    """The registry sees every adapter's pools (here SQLAlchemy's), by library."""
    poolwatch.instrument_sqlalchemy()
    engine = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool)
    assert REGISTRY.names() == {engine.url.database: "sqlalchemy"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_can_name_pools_while_the_parent_held_the_lock() -> None:
    """The registry's lock, held by another thread at fork(), is fresh in the child."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with REGISTRY._lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: claims a name, exits 0 if it did not hang
        owner = Owner()
        os._exit(0 if REGISTRY.claim("forked", owner) == "forked" else 1)
    release.set()
    holder.join()
    statuses: list[int] = []
    reaper = threading.Thread(target=lambda: statuses.append(os.waitpid(pid, 0)[1]))
    reaper.start()
    reaper.join(10)
    if not statuses:
        os.kill(pid, 9)
        reaper.join()
        pytest.fail("the child hung on the registry's lock")
    assert os.waitstatus_to_exitcode(statuses[0]) == 0


@pytest.mark.parametrize("histograms", ["aggregated", "standard"])
def test_every_sqlite_pool_point_carries_the_pool_identity(
    telemetry: Capture, sqlite_url: str, histograms: str
) -> None:
    """100% of the points that name a pool carry ``db.system.name`` and ``db.namespace``."""
    engine = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool, pool_size=1, max_overflow=0)
    poolwatch.instrument_sqlalchemy(
        engine, histograms=histograms, leak_threshold=0, **telemetry.providers
    )
    with engine.connect():
        pass
    points = [
        point
        for found in telemetry.metrics().values()
        for point in found
        if catalog.POOL_NAME in point.attributes
    ]
    assert len(points) >= 10
    identity = {catalog.DB_SYSTEM: "sqlite", catalog.DB_NAMESPACE: engine.url.database}
    assert [p.attributes for p in points if not identity.items() <= p.attributes.items()] == []


@pytest.mark.parametrize("histograms", ["otlp", "standard"])
def test_a_renamed_pool_keeps_one_histogram_series_per_name(
    telemetry: Capture, tmp_path: Path, histograms: str
) -> None:
    """After a drained pool hands its name on, each wait-time series names one pool: the new
    pool's under the plain name, the old pool's under ``#2``, never two series alike."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    poolwatch.instrument_sqlalchemy(histograms=histograms, **telemetry.providers)
    migrations = sa.create_engine(url, poolclass=sa.pool.QueuePool)
    migrations.connect().close()
    migrations.dispose()
    app = sa.create_engine(url, poolclass=sa.pool.QueuePool)
    app.connect().close()
    migrations.connect().close()
    points = telemetry.metrics()[catalog.CONNECTION_WAIT_TIME.name]
    names = sorted(point.attributes[catalog.POOL_NAME] for point in points)
    path = str(tmp_path / "app.db")
    assert names == [path, f"{path}#2"]
    assert sorted(point.value["count"] for point in points) == [1, 2]
