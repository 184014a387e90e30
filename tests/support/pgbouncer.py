"""A throwaway PgBouncer on loopback in front of the test PostgreSQL server.

``start_pgbouncer(cluster, ...)`` writes a config and a user list into a fresh temporary
directory and runs Debian's ``pgbouncer`` in the foreground on a free 127.0.0.1 port (no unix
socket), as the user the PostgreSQL server runs as when the tests run as root (PgBouncer refuses
root). Clients log in with md5 against the user list; the ``poolwatch`` user is also the admin
of the ``pgbouncer`` console database. ``PgBouncer.stop()`` ends it and deletes its files.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tests.support.polling import poll
from tests.support.postgres import PostgresCluster, _server_user

if TYPE_CHECKING:
    import psycopg

__all__ = ["PgBouncer", "PgBouncerNotAvailable", "find_pgbouncer", "start_pgbouncer"]

#: The admin console's database name.
CONSOLE = "pgbouncer"
_READY_TIMEOUT_S = 30


class PgBouncerNotAvailable(RuntimeError):
    """The ``pgbouncer`` program is not installed."""


def find_pgbouncer() -> str:
    """The pgbouncer executable (``.ci/setup-system.sh`` installs Debian's)."""
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )
    if not found:
        raise PgBouncerNotAvailable("pgbouncer is not installed (run .ci/setup-system.sh)")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PgBouncer:
    """A running PgBouncer. Build it with :func:`start_pgbouncer`."""

    def __init__(self, cluster: PostgresCluster, directory: Path, port: int) -> None:
        self.cluster = cluster
        self.directory = directory
        self.port = port
        self.host = "127.0.0.1"
        self.user = cluster.user
        self.password = cluster.password
        self.database = cluster.database
        self.log_file = directory / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str | None = None) -> str:
        """``postgresql://poolwatch:...@127.0.0.1:PORT/<database>`` through PgBouncer."""
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"postgresql://{credentials}@{self.host}:{self.port}/{database or self.database}"

    @property
    def console_url(self) -> str:
        """The admin console: database ``pgbouncer``."""
        return self.url(CONSOLE)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg connection through PgBouncer to the test database."""
        import psycopg

        return psycopg.connect(self.url(), **kwargs)

    def console(self) -> psycopg.Connection[Any]:
        """The admin console; it speaks only the simple query protocol (a ``ClientCursor``)."""
        import psycopg

        return psycopg.connect(
            self.console_url, autocommit=True, cursor_factory=psycopg.ClientCursor
        )

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on the admin console, as dicts."""
        with self.console() as conn:
            cursor = conn.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of PgBouncer's log."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """End PgBouncer and delete its files; safe to call more than once."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _config(
    cluster: PostgresCluster, port: int, directory: Path, settings: Mapping[str, str | int]
) -> str:
    merged: dict[str, str | int] = {
        "listen_addr": "127.0.0.1",
        "listen_port": port,
        "unix_socket_dir": "",
        "auth_type": "md5",
        "auth_file": str(directory / "userlist.txt"),
        "admin_users": cluster.user,
        "pool_mode": "transaction",
        "max_client_conn": 100,
        "default_pool_size": 5,
        # lib/pq (the collector's sqlquery receiver) sends it at startup.
        "ignore_startup_parameters": "extra_float_digits",
        "logfile": str(directory / "pgbouncer.log"),
        "pidfile": str(directory / "pgbouncer.pid"),
        **settings,
    }
    server = f"host={cluster.host} port={cluster.port}"
    lines = [
        "[databases]",
        f"{cluster.database} = {server} dbname={cluster.database}",
        f"postgres = {server} dbname=postgres",
        "",
        "[pgbouncer]",
        *(f"{key} = {value}" for key, value in merged.items()),
    ]
    return "\n".join(lines) + "\n"


def start_pgbouncer(
    cluster: PostgresCluster, settings: Mapping[str, str | int] | None = None
) -> PgBouncer:
    """Start PgBouncer in front of ``cluster`` with ``settings`` over the defaults; ready."""
    program = find_pgbouncer()
    run_as = _server_user()
    directory = Path(tempfile.mkdtemp(prefix="poolwatch-pgbouncer-", dir="/tmp"))
    port = _free_port()
    (directory / "pgbouncer.ini").write_text(_config(cluster, port, directory, settings or {}))
    (directory / "userlist.txt").write_text(f'"{cluster.user}" "{cluster.password}"\n')
    if run_as is not None:
        for path in (directory, *directory.iterdir()):
            os.chown(path, run_as.pw_uid, run_as.pw_gid)
    command = [program, str(directory / "pgbouncer.ini")]
    if run_as is not None:
        command = ["runuser", "-u", run_as.pw_name, "--", *command]
    bouncer = PgBouncer(cluster, directory, port)
    bouncer.process = subprocess.Popen(
        command,
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    atexit.register(bouncer.stop)

    def listening() -> bool:
        if bouncer.process.poll() is not None:
            bouncer.stop()
            raise RuntimeError(
                f"pgbouncer exited {bouncer.process.returncode}:\n{bouncer.log_tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    if poll(listening, _READY_TIMEOUT_S, 0.1):
        return bouncer
    bouncer.stop()
    raise RuntimeError(f"pgbouncer did not listen in time:\n{bouncer.log_tail()}")
