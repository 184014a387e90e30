"""A throwaway PostgreSQL for the benchmarks, started as the tests start theirs."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

# The tests' helper starts it; run from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import PostgresCluster, start_postgres


@contextlib.contextmanager
def throwaway_postgres(max_connections: int = 50) -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster on loopback for the duration of the block."""
    cluster = start_postgres(max_connections)
    try:
        yield cluster
    finally:
        cluster.stop()
