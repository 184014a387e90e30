"""The doctor's rules on known inputs: capacity arithmetic, thresholds, settings, exit statuses."""

from __future__ import annotations

import pytest

from poolwatch._redact import redact
from poolwatch.doctor import Settings, checks
from poolwatch.doctor.findings import Finding, Level, exit_status
from poolwatch.doctor.observed import ObservedPool
from poolwatch.doctor.report import Report
from poolwatch.doctor.server import Holder, Server, libpq_url


def server(**changes: object) -> Server:
    """A PostgreSQL 16 server with 100 slots, 3 + 2 reserved, timeouts as given."""
    values: dict[str, object] = {
        "max_connections": 100,
        "superuser_reserved": 3,
        "reserved": 2,
        "idle_in_transaction_timeout": 60.0,
        "idle_session_timeout": 0.0,
        "holders": [Holder("orders-api", "idle", 4), Holder("", "active", 1)],
    }
    values.update(changes)
    return Server(**values)  # type: ignore[arg-type]


def pool(max_: float, rate: float, use: float, peak: float = 1) -> ObservedPool:
    """An observed pool with the given max, checkout rate and mean hold time."""
    return ObservedPool("shop", "orders", 1, max_, peak, 0.001, use, rate, 0.0)


def test_usable_slots_subtract_both_reserved_settings() -> None:
    """100 - 3 superuser - 2 reserved_connections = 95; 5 connections held, 1 unnamed."""
    found = server()
    assert (found.usable, found.in_use, found.unnamed) == (95, 5, 1)


def test_possible_connections_use_sqlalchemys_default_overflow() -> None:
    """--pool-size 5 alone: (5 + 10) x 4 workers x 2 replicas = 120."""
    found = checks.capacity(Settings(pool_size=5, workers=4, replicas=2), server(), [])
    assert found is not None
    assert found.possible == 120
    assert found.formula == "(pool_size 5 + max_overflow 10) x 4 workers x 2 replicas = 120"


@pytest.mark.parametrize(
    ("possible", "code", "level"),
    [(95, "capacity.near_server", Level.WARNING), (96, "capacity.exceeds_server", Level.PROBLEM),
     (76, "capacity.ok", Level.OK), (77, "capacity.near_server", Level.WARNING)],
)  # fmt: skip
def test_capacity_levels_either_side_of_the_limits(possible: int, code: str, level: Level) -> None:
    """Over 95 usable slots is a problem; over 80% of them (76) a warning."""
    found = checks.capacity_findings(checks.Capacity(possible, "", "flags", 95))
    assert [(f.code, f.level) for f in found] == [(code, level)]


@pytest.mark.parametrize(
    ("rate", "use", "codes"),
    [(10.0, 0.5, ["pool.undersized"]), (10.0, 0.41, ["pool.near_capacity"]),
     (10.0, 0.4, ["pool.ok"])],
)  # fmt: skip
def test_littles_law_against_the_pool_max(rate: float, use: float, codes: list[str]) -> None:
    """10/s x 0.5 s = 5 busy of 5 is undersized; 4.1 of 5 is near capacity; 4.0 fits."""
    assert [f.code for f in checks.pool_findings(pool(5, rate, use))] == codes


def test_needed_connections_round_up_the_average_load() -> None:
    """2.6 busy on average needs 3 connections; exactly 4.0 needs 4."""
    assert pool(10, 10.0, 0.26).needed == 3
    assert pool(10, 10.0, 0.4).needed == 4


def test_recycling_after_the_servers_idle_session_timeout_is_named() -> None:
    """pool_recycle 3600 s with idle_session_timeout 600 s: idle connections get cut first."""
    found = checks.settings_findings(
        Settings(pool_recycle=3600, pool_pre_ping=True), server(idle_session_timeout=600.0)
    )
    assert [f.code for f in found] == [
        "settings.recycle_after_idle_timeout",
        "server.unnamed_connections",
    ]
    assert "pool_recycle 3600s is not shorter than the idle timeout of 600s" in found[0].message


def test_pre_ping_or_recycling_makes_long_lived_connections_safe() -> None:
    """No pre-ping is fine when connections are recycled; pre-ping is fine when they are not."""
    quiet = server(holders=[])
    assert checks.settings_findings(Settings(pool_pre_ping=False, pool_recycle=300), quiet) == []
    assert checks.settings_findings(Settings(pool_pre_ping=True), quiet) == []


def test_conn_max_age_is_a_risk_only_under_asgi() -> None:
    """CONN_MAX_AGE=60 under WSGI says nothing; under ASGI it is a warning; 0 is fine."""
    quiet = server(holders=[])
    assert checks.settings_findings(Settings(conn_max_age=60), quiet) == []
    assert checks.settings_findings(Settings(conn_max_age=0, asgi=True), quiet) == []
    (found,) = checks.settings_findings(Settings(conn_max_age=60, asgi=True), quiet)
    assert found.code == "settings.conn_max_age_asgi"


def test_the_exit_status_is_the_worst_finding() -> None:
    """0 with nothing or only OK, else the highest level: warning 1, problem 2, unchecked 3."""
    ok, warning = Finding(Level.OK, "a", ""), Finding(Level.WARNING, "b", "")
    problem, unchecked = Finding(Level.PROBLEM, "c", ""), Finding(Level.UNCHECKED, "d", "")
    assert exit_status([]) == exit_status([ok]) == 0
    assert exit_status([ok, warning]) == 1
    assert exit_status([warning, problem]) == 2
    assert exit_status([problem, unchecked]) == 3
    assert Report("db", findings=[warning, problem]).exit_status == 2


def test_sqlalchemy_urls_are_accepted_and_passwords_never_shown() -> None:
    """postgresql+psycopg:// becomes libpq's postgresql://; the report hides the password."""
    url = "postgresql+psycopg://app:s3cret@db:5432/shop"
    assert libpq_url(url) == "postgresql://app:s3cret@db:5432/shop"
    assert redact(url) == "postgresql+psycopg://app:***@db:5432/shop"


def test_a_password_in_the_query_string_is_never_shown() -> None:
    """libpq takes ``?password=`` and ``password=`` in key=value strings too: both are masked."""
    assert (
        redact("postgresql://app@db/shop?password=s3cret")
        == "postgresql://app@db/shop?password=***"
    )
    assert (
        redact("postgresql:///shop?host=/tmp&password=s3cret&sslmode=require")
        == "postgresql:///shop?host=/tmp&password=***&sslmode=require"
    )
    assert redact("host=db password='s3 cret' user=app") == "host=db password='***' user=app"
