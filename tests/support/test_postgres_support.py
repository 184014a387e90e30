"""Checks of the throwaway PostgreSQL helper that other tests build on."""

from __future__ import annotations

import socket
import uuid

import psycopg
import pytest

from tests.support.postgres import (
    ADMIN_APPLICATION_NAME,
    DATABASE,
    PASSWORD,
    USER,
    PostgresCluster,
    start_postgres,
    wait_until,
)


def _refuses_tcp(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect((host, port))
        except OSError:
            return True
        return False


def test_cluster_accepts_psycopg_connection_on_loopback(
    postgres: PostgresCluster,
) -> None:
    with psycopg.connect(postgres.dsn, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT current_user, current_database(),"
            " host(inet_server_addr()), inet_server_port(),"
            " current_setting('listen_addresses')"
        ).fetchone()
    assert row == (USER, DATABASE, "127.0.0.1", postgres.port, "127.0.0.1")


def test_connection_strings(postgres: PostgresCluster) -> None:
    expected = f"{USER}:{PASSWORD}@127.0.0.1:{postgres.port}/{DATABASE}"
    assert postgres.url == f"postgresql://{expected}"
    assert postgres.sqlalchemy_url() == f"postgresql+psycopg://{expected}"
    assert postgres.sqlalchemy_url("asyncpg") == f"postgresql+asyncpg://{expected}"


def test_postgres_url_fixture(postgres: PostgresCluster, postgres_url: str) -> None:
    assert postgres_url == postgres.sqlalchemy_url("psycopg")
    assert postgres_url.startswith("postgresql+psycopg://")


def test_server_listens_on_127_0_0_1_only(postgres: PostgresCluster) -> None:
    assert not _refuses_tcp("127.0.0.1", postgres.port)
    # Another loopback address on the same port: nothing listens there.
    assert _refuses_tcp("127.0.0.2", postgres.port)
    if socket.has_ipv6:
        assert _refuses_tcp("::1", postgres.port)


def test_server_connections_sees_idle_connection(postgres: PostgresCluster) -> None:
    app_name = f"support-test-{uuid.uuid4().hex[:8]}"
    assert postgres.server_connections(app_name) == []

    with psycopg.connect(postgres.dsn, application_name=app_name, autocommit=True) as conn:
        conn.execute("SELECT 1")
        rows = postgres.server_connections(application_name=app_name)
        assert len(rows) == 1
        (row,) = rows
        assert row.pid == conn.info.backend_pid
        assert row.application_name == app_name
        assert row.state == "idle"
        assert row.usename == USER
        assert row.datname == DATABASE
        assert row.query == "SELECT 1"

        everyone = postgres.server_connections()
        assert row in everyone
        # The helper's own backend is left out.
        assert all(r.application_name != ADMIN_APPLICATION_NAME for r in everyone)

    assert wait_until(lambda: postgres.server_connections(app_name) == [])


# The session cluster is requested only for its skip/fail policy when
# PostgreSQL is not installed; this test starts a cluster of its own.
@pytest.mark.usefixtures("postgres")
def test_stop_removes_data_dir() -> None:
    cluster = start_postgres(max_connections=7)
    try:
        assert cluster.data_dir.is_dir()
        with psycopg.connect(cluster.dsn) as conn:
            row = conn.execute("SHOW max_connections").fetchone()
        assert row == ("7",)
    finally:
        cluster.stop()

    assert not cluster.data_dir.exists()
    assert not cluster.base_dir.exists()
    assert _refuses_tcp("127.0.0.1", cluster.port)
    cluster.stop()  # a second stop is harmless
