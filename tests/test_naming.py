"""Pool names: stable, unique within a process, overridable, and never holding a password."""

from __future__ import annotations

import gc

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from poolwatch.naming import NameRegistry, url_pool_name


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://app:s3cret@db.internal:5432/orders",
            "postgresql://app@db.internal:5432/orders",
        ),
        (
            "postgresql://app:s3cret@db/orders?password=s3cret&sslmode=require",
            "postgresql://app@db/orders",
        ),
        ("mysql+pymysql://root@127.0.0.1/shop", "mysql://root@127.0.0.1/shop"),
        ("sqlite:////var/lib/app/app.db", "sqlite:////var/lib/app/app.db"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_url_names_drop_password_driver_and_query(url: str, expected: str) -> None:
    """The name keeps backend, user, host, port and database, and nothing secret."""
    name = url_pool_name(make_url(url))
    assert name == expected
    assert "s3cret" not in name


def test_the_same_url_gives_the_same_name_every_time() -> None:
    """Names do not depend on object ids or time, so they are stable across restarts."""
    url = make_url("postgresql://app:pw@db:5432/orders")
    assert url_pool_name(url) == url_pool_name(make_url(str(url)))


def test_two_pools_on_one_url_stay_apart() -> None:
    """The second claimant of a name gets ``#2``, the third ``#3``."""

    class Owner:
        pass

    registry = NameRegistry()
    owners = [Owner(), Owner(), Owner()]
    assert [registry.claim("db", owner) for owner in owners] == ["db", "db#2", "db#3"]


def test_a_released_name_is_reused() -> None:
    """Re-creating an engine does not grow the set of names."""

    class Owner:
        pass

    registry = NameRegistry()
    first = Owner()
    assert registry.claim("db", first) == "db"
    registry.release(first)
    assert registry.claim("db", Owner()) == "db"
    second = Owner()
    registry.claim("other", second)
    del second
    gc.collect()
    assert registry.claim("other", Owner()) == "other"


def test_engines_on_one_url_get_distinct_names(sqlite_url: str) -> None:
    """Two engines on the same database are two pools, and are reported as two."""
    import poolwatch

    poolwatch.instrument_sqlalchemy()
    first = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool)
    second = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool)
    named = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool, pool_logging_name="reports")
    names = [e.pool._poolwatch_recorder.name for e in (first, second, named)]
    assert names == [sqlite_url, sqlite_url + "#2", "reports"]
