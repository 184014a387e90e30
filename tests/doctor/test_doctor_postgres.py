"""``poolwatch doctor`` against a real PostgreSQL with known limits and known connections."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from poolwatch.doctor import EXIT_OK, EXIT_PROBLEMS, EXIT_UNCHECKED, EXIT_WARNINGS
from tests.doctor.conftest import MAX_CONNECTIONS, USABLE, doctor
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.postgres


@pytest.fixture
def open_connections(doctor_postgres: PostgresCluster) -> Iterator[None]:
    """Three idle and one idle-in-transaction connections of orders-api, two without a name."""
    named = [
        psycopg.connect(doctor_postgres.dsn, application_name="orders-api", autocommit=True)
        for _ in range(3)
    ]
    in_transaction = psycopg.connect(doctor_postgres.dsn, application_name="orders-api")
    in_transaction.execute("SELECT 1")  # opens a transaction and leaves it open
    unnamed = [psycopg.connect(doctor_postgres.dsn, autocommit=True) for _ in range(2)]
    try:
        yield
    finally:
        for connection in [*named, in_transaction, *unnamed]:
            connection.close()


@pytest.fixture
def idle_in_transaction_timeout(doctor_postgres: PostgresCluster) -> Iterator[None]:
    """idle_in_transaction_session_timeout = 30s for the test role's new sessions."""
    with doctor_postgres.admin_connection() as admin:
        admin.execute("ALTER ROLE poolwatch SET idle_in_transaction_session_timeout = '30s'")
    try:
        yield
    finally:
        with doctor_postgres.admin_connection() as admin:
            admin.execute("ALTER ROLE poolwatch RESET idle_in_transaction_session_timeout")


def test_too_many_possible_connections_is_a_problem(
    doctor_postgres: PostgresCluster, open_connections: None
) -> None:
    """(2 + 1) x 2 workers x 3 replicas = 18 > 20 - 3 reserved = 17: exit 2."""
    found = doctor("--database-url", doctor_postgres.url, "--pool-size", "2",
                   "--max-overflow", "1", "--workers", "2", "--replicas", "3")  # fmt: skip
    assert found.status == EXIT_PROBLEMS, found.output
    assert found.report is not None
    assert found.report["capacity"]["possible"] == 18
    assert found.report["capacity"]["usable"] == USABLE
    assert found.report["capacity"]["source"] == "flags"
    server = found.report["server"]
    assert server["max_connections"] == MAX_CONNECTIONS
    assert server["superuser_reserved_connections"] == 3
    assert server["reserved_connections"] is None  # PostgreSQL 15 has no such setting
    assert found.codes("problem") == ["capacity.exceeds_server"]


def test_who_holds_connections_by_application_name_and_state(
    doctor_postgres: PostgresCluster, open_connections: None
) -> None:
    """pg_stat_activity's client connections, grouped, the doctor's own excluded."""
    found = doctor("--database-url", doctor_postgres.url, "--pool-size", "2")
    assert found.report is not None
    holders = {
        (h["application_name"], h["state"]): h["connections"]
        for h in found.report["server"]["holders"]
    }
    assert holders == {
        ("orders-api", "idle"): 3,
        ("orders-api", "idle in transaction"): 1,
        ("", "idle"): 2,
    }
    assert found.report["server"]["connections_now"] == 6


def test_unnamed_connections_and_no_idle_in_transaction_timeout_are_warnings(
    doctor_postgres: PostgresCluster, open_connections: None
) -> None:
    """(5 + 1) x 2 = 12 fits 17, but two risky things show: exit 1."""
    found = doctor("--database-url", doctor_postgres.url, "--pool-size", "5",
                   "--max-overflow", "1", "--workers", "2")  # fmt: skip
    assert found.status == EXIT_WARNINGS, found.output
    assert found.codes("warning") == [
        "server.no_idle_in_transaction_timeout",
        "server.unnamed_connections",
    ]
    assert found.codes("ok") == ["capacity.ok"]
    assert found.report is not None
    (unnamed,) = [f for f in found.report["findings"] if f["code"] == "server.unnamed_connections"]
    assert unnamed["message"].startswith("2 connections set no application_name")


def test_a_sound_setup_exits_zero(
    doctor_postgres: PostgresCluster, idle_in_transaction_timeout: None
) -> None:
    """Fitting pools, a timeout for abandoned transactions, nobody unnamed: exit 0."""
    found = doctor("--database-url", doctor_postgres.url, "--pool-size", "5",
                   "--max-overflow", "5", "--pool-pre-ping")  # fmt: skip
    assert found.status == EXIT_OK, found.output
    assert found.report is not None
    assert found.report["server"]["idle_in_transaction_session_timeout_seconds"] == 30.0
    assert found.codes() == ["capacity.ok"]


def test_risky_pool_and_django_settings_are_named(
    doctor_postgres: PostgresCluster, idle_in_transaction_timeout: None
) -> None:
    """No pre-ping with never-recycled connections, recycling after a proxy's idle timeout,
    CONN_MAX_AGE under ASGI."""
    found = doctor("--database-url", doctor_postgres.url, "--pool-size", "5", "--max-overflow",
                   "0", "--no-pool-pre-ping", "--pool-recycle", "-1", "--network-idle-timeout",
                   "300", "--conn-max-age", "60", "--asgi")  # fmt: skip
    assert found.status == EXIT_WARNINGS, found.output
    assert found.codes("warning") == [
        "settings.no_pre_ping",
        "settings.recycle_after_idle_timeout",
        "settings.conn_max_age_asgi",
    ]


def test_the_plain_report_says_it_in_words(
    doctor_postgres: PostgresCluster, open_connections: None
) -> None:
    """The text report shows the formula, the server's arithmetic and the holders."""
    found = doctor("--database-url", doctor_postgres.url, "--pool-size", "2", "--max-overflow",
                   "1", "--workers", "2", "--replicas", "3", json_report=False)  # fmt: skip
    assert found.status == EXIT_PROBLEMS
    text = found.output
    assert "(pool_size 2 + max_overflow 1) x 2 workers x 3 replicas = 18" in text
    assert "max_connections 20 - superuser_reserved_connections 3 = 17" in text
    assert "orders-api" in text and "idle in transaction" in text
    assert "PROBLEM   capacity.exceeds_server: 18 possible connections for 17 usable" in text
    assert "poolwatch-secret" not in text  # the URL is shown without its password


def test_an_unreachable_database_cannot_be_checked(doctor_postgres: PostgresCluster) -> None:
    """A server that does not answer: exit 3, saying why."""
    url = doctor_postgres.url.replace(f":{doctor_postgres.port}/", ":1/")
    found = doctor("--database-url", url, "--pool-size", "5", "--timeout", "2")
    assert found.status == EXIT_UNCHECKED, found.output
    assert found.codes() == ["database.unreachable"]


def test_without_pool_sizes_or_prometheus_capacity_cannot_be_checked(
    doctor_postgres: PostgresCluster,
) -> None:
    """Nothing says how many connections the pools may open: exit 3."""
    found = doctor("--database-url", doctor_postgres.url)
    assert found.status == EXIT_UNCHECKED, found.output
    assert found.codes("unchecked") == ["capacity.unknown"]
