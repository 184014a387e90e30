"""A PostgreSQL role with a ``CONNECTION LIMIT``: the server refuses its connections past it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg import sql

from tests.support.postgres import PostgresCluster

#: What PostgreSQL says when a role is over its limit (SQLSTATE 53300).
REFUSAL = "too many connections for role"


@contextmanager
def limited_role(postgres: PostgresCluster, limit: int) -> Iterator[str]:
    """A login role of its own that may hold ``limit`` connections (dropped afterwards)."""
    role = f"limited_{uuid.uuid4().hex[:8]}"
    with postgres.admin_connection() as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {}").format(
                sql.Identifier(role), sql.Literal(limit)
            )
        )
    try:
        yield role
    finally:
        with postgres.admin_connection() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def role_url(postgres: PostgresCluster, role: str) -> str:
    """A SQLAlchemy URL (psycopg 3) for ``role`` on the test database (loopback is trusted)."""
    return f"postgresql+psycopg://{role}@{postgres.host}:{postgres.port}/{postgres.database}"


def role_dsn(postgres: PostgresCluster, role: str) -> str:
    """A libpq string for ``role`` on the test database."""
    return f"host={postgres.host} port={postgres.port} dbname={postgres.database} user={role}"
