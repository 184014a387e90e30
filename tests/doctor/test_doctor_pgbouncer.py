"""``poolwatch doctor --pgbouncer-url``: both sides of PgBouncer, against a real PgBouncer.

PgBouncer runs in front of the doctor's PostgreSQL (20 slots, 17 usable) with two databases,
``poolwatch`` and ``postgres``; no client has connected yet, so each has one pool (one user).
Every limit is checked just below and just above it; each transaction-pooling hazard with and
without the setting that causes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from poolwatch.doctor import EXIT_PROBLEMS, EXIT_UNCHECKED, EXIT_WARNINGS
from tests.doctor.conftest import Diagnosis, doctor
from tests.support import pipeline
from tests.support.fixtures import needed
from tests.support.pgbouncer import PgBouncer, PgBouncerNotAvailable, start_pgbouncer
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.postgres

MAX_CLIENT_CONN = 40
Start = Callable[..., PgBouncer]


@pytest.fixture
def bouncer(doctor_postgres: PostgresCluster) -> Iterator[Start]:
    """Start PgBouncer in front of the doctor's PostgreSQL with pgbouncer.ini settings."""
    started: list[PgBouncer] = []

    def start(**settings: str | int) -> PgBouncer:
        try:
            started.append(start_pgbouncer(doctor_postgres, settings))
        except PgBouncerNotAvailable as missing:
            needed(str(missing))
        return started[-1]

    yield start
    for running in started:
        running.stop()


def diagnose(postgres: PostgresCluster, bouncer: PgBouncer, *flags: str) -> Diagnosis:
    """The doctor on PostgreSQL with PgBouncer in front."""
    return doctor("--database-url", postgres.url, "--pgbouncer-url", bouncer.url(), *flags)


def pgbouncer_codes(found: Diagnosis) -> list[str]:
    """The PgBouncer findings' codes, sorted."""
    return sorted(code for code in found.codes() if code.startswith("pgbouncer."))


@pytest.mark.parametrize(
    ("pool_size", "overflow", "expected"),
    [
        # (pool_size + max_overflow) x 4 workers against max_client_conn 40
        (6, 5, "pgbouncer.clients_exceed_max_client_conn"),  # 44 > 40
        (5, 5, "pgbouncer.clients_near_max_client_conn"),  # 40: at the limit, over 80 %
        (4, 4, "pgbouncer.clients_fit"),  # 32: 80 %, not over
    ],
)
def test_app_pools_against_max_client_conn(
    doctor_postgres: PostgresCluster, bouncer: Start, pool_size: int, overflow: int, expected: str
) -> None:
    """App pools all full against PgBouncer's max_client_conn, on both sides of it and of 80 %."""
    running = bouncer(pool_mode="session", max_client_conn=MAX_CLIENT_CONN, default_pool_size=2)
    found = diagnose(doctor_postgres, running, "--pool-size", str(pool_size),
                     "--max-overflow", str(overflow), "--workers", "4")  # fmt: skip
    client_codes = [c for c in pgbouncer_codes(found) if c.startswith("pgbouncer.clients")]
    assert client_codes == [expected], found.output
    # The apps connect to PgBouncer: their pools are not compared with PostgreSQL directly.
    assert not [c for c in found.codes() if c.startswith("capacity.")], found.output


@pytest.mark.parametrize(
    ("pool_size", "expected", "problems"),
    [
        # 2 databases x (default_pool_size + reserve 0) x 1 user against 17 usable slots
        (9, "pgbouncer.servers_exceed_postgres", ["pgbouncer.servers_exceed_postgres"]),  # 18 > 17
        (8, "pgbouncer.servers_near_postgres", []),  # 16 > 13.6
        (6, "pgbouncer.servers_fit", []),  # 12
    ],
)
def test_pgbouncer_pools_against_postgres_max_connections(
    doctor_postgres: PostgresCluster,
    bouncer: Start,
    pool_size: int,
    expected: str,
    problems: list[str],
) -> None:
    """default_pool_size x databases x users against PostgreSQL's usable slots, both sides."""
    running = bouncer(pool_mode="session", default_pool_size=pool_size)
    found = diagnose(doctor_postgres, running, "--pool-size", "1", "--max-overflow", "0")
    server_codes = [c for c in pgbouncer_codes(found) if c.startswith("pgbouncer.servers")]
    assert server_codes == [expected], found.output
    assert found.codes("problem") == problems, found.output
    assert found.status == (EXIT_PROBLEMS if problems else EXIT_WARNINGS), found.output
    message = next(f["message"] for f in found.report["findings"] if f["code"] == expected)  # type: ignore[index]
    assert f"PgBouncer may open {2 * pool_size} server connections" in message
    assert "for 17 usable PostgreSQL slots" in message


def test_reserve_pool_and_database_cap_count(
    doctor_postgres: PostgresCluster, bouncer: Start
) -> None:
    """reserve_pool adds to every pool; max_db_connections caps a database."""
    running = bouncer(pool_mode="session", default_pool_size=6, reserve_pool_size=3,
                      max_db_connections=8)  # fmt: skip
    found = diagnose(doctor_postgres, running, "--pool-size", "1", "--max-overflow", "0")
    # min((6 + 3) x 1, 8) per database, two databases: 16 of 17
    assert "pgbouncer.servers_near_postgres" in found.codes(), found.output
    message = next(f["message"] for f in found.report["findings"]  # type: ignore[index]
                   if f["code"] == "pgbouncer.servers_near_postgres")  # fmt: skip
    assert "PgBouncer may open 16 server connections" in message


def test_session_pooling_has_no_transaction_hazards(
    doctor_postgres: PostgresCluster, bouncer: Start
) -> None:
    """Session pooling: no session-state, prepared-statement or CONN_MAX_AGE warning."""
    running = bouncer(pool_mode="session")
    found = diagnose(doctor_postgres, running, "--pool-size", "1", "--max-overflow", "0",
                     "--conn-max-age", "600")  # fmt: skip
    assert not [c for c in pgbouncer_codes(found) if "transaction" in c], found.output


def test_transaction_pooling_warns_about_session_state_and_prepared_statements(
    doctor_postgres: PostgresCluster, bouncer: Start
) -> None:
    """Transaction pooling on PgBouncer 1.18 (no max_prepared_statements): two warnings."""
    running = bouncer(pool_mode="transaction")
    found = diagnose(doctor_postgres, running, "--pool-size", "1", "--max-overflow", "0",
                     "--conn-max-age", "0")  # fmt: skip
    hazards = [c for c in pgbouncer_codes(found) if "transaction" in c]
    assert hazards == [
        "pgbouncer.transaction_prepared_statements",
        "pgbouncer.transaction_session_state",
    ], found.output
    assert found.status == EXIT_WARNINGS


def test_conn_max_age_with_transaction_pooling_is_a_warning(
    doctor_postgres: PostgresCluster, bouncer: Start
) -> None:
    """Persistent Django connections (CONN_MAX_AGE > 0) through transaction pooling."""
    running = bouncer(pool_mode="transaction")
    found = diagnose(doctor_postgres, running, "--pool-size", "1", "--max-overflow", "0",
                     "--conn-max-age", "600")  # fmt: skip
    assert "pgbouncer.transaction_conn_max_age" in found.codes("warning"), found.output


def test_an_unreachable_pgbouncer_cannot_be_checked(doctor_postgres: PostgresCluster) -> None:
    """A closed loopback port: the PgBouncer check is unchecked, exit 3, password not shown."""
    url = f"postgresql://poolwatch:hunter2@127.0.0.1:{pipeline.free_port()}/poolwatch"
    found = doctor("--database-url", doctor_postgres.url, "--pgbouncer-url", url,
                   "--pool-size", "1")  # fmt: skip
    assert found.status == EXIT_UNCHECKED, found.output
    assert "pgbouncer.unreachable" in found.codes("unchecked")
    assert "hunter2" not in found.output


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("pgbouncer_max_client_conn: 40\n", ("ok", "pgbouncer.alert_limit_matches")),
        ("pgbouncer_max_client_conn: 2000\n", ("warning", "pgbouncer.alert_limit_differs")),
        ("selector: 'cluster=\"prod\"'\n", ("warning", "pgbouncer.alert_limit_unset")),
    ],
)
def test_monitoring_config_limit_against_max_client_conn(
    doctor_postgres: PostgresCluster,
    bouncer: Start,
    tmp_path: Path,
    settings: str,
    expected: tuple[str, str],
) -> None:
    """--monitoring-config: its pgbouncer_max_client_conn against PgBouncer's, equal or not."""
    level, code = expected
    running = bouncer(pool_mode="session", max_client_conn=MAX_CLIENT_CONN)
    monitoring = tmp_path / "monitoring.yaml"
    monitoring.write_text(settings)
    found = diagnose(doctor_postgres, running, "--pool-size", "1", "--max-overflow", "0",
                     "--monitoring-config", str(monitoring))  # fmt: skip
    assert [c for c in pgbouncer_codes(found) if c.startswith("pgbouncer.alert")] == [code]
    assert code in found.codes(level), found.output
    message = next(f["message"] for f in found.report["findings"] if f["code"] == code)  # type: ignore[index]
    assert f"PgBouncer's max_client_conn is {MAX_CLIENT_CONN}" in message, message


def test_without_monitoring_config_the_alert_limit_is_not_checked(
    doctor_postgres: PostgresCluster, bouncer: Start
) -> None:
    """No --monitoring-config: no finding about the alert's limit."""
    running = bouncer(pool_mode="session", max_client_conn=MAX_CLIENT_CONN)
    found = diagnose(doctor_postgres, running, "--pool-size", "1", "--max-overflow", "0")
    assert not [c for c in pgbouncer_codes(found) if c.startswith("pgbouncer.alert")]


def test_an_unreadable_monitoring_config_cannot_be_checked(
    doctor_postgres: PostgresCluster, bouncer: Start, tmp_path: Path
) -> None:
    """A monitoring config with a bad value: exit 3, naming the option and the setting."""
    running = bouncer(pool_mode="session")
    monitoring = tmp_path / "monitoring.yaml"
    monitoring.write_text("pgbouncer_max_client_conn: many\n")
    found = diagnose(doctor_postgres, running, "--pool-size", "1",
                     "--monitoring-config", str(monitoring))  # fmt: skip
    assert found.status == EXIT_UNCHECKED, found.output
    assert "--monitoring-config: pgbouncer_max_client_conn: expected a whole number" in (
        found.output
    ), found.output
