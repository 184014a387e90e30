"""Throwaway PostgreSQL clusters for the test suite.

``start_postgres()`` runs ``initdb`` into a fresh temporary directory, starts the
server with ``pg_ctl`` on a free loopback port and creates the ``poolwatch``
role and database. The server listens on 127.0.0.1 only, keeps its unix socket
inside the temporary directory and trusts loopback connections, so nothing on
the machine outside the test run can reach it. ``PostgresCluster.stop()`` kills
the server and deletes every file it wrote.

PostgreSQL refuses to run as root. When the tests run as root (CI does), the
server programs run as the ``postgres`` system user, or as ``poolwatch-pg``,
created on demand, when there is no ``postgres`` user.

The server binaries come from ``$POOLWATCH_PG_BIN`` if set, else from ``PATH``,
else from the newest ``/usr/lib/postgresql/<version>/bin`` (Debian's layout).
``.ci/setup-system.sh`` installs them.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self
from urllib.parse import quote

from tests.support.polling import poll

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "ADMIN_APPLICATION_NAME",
    "DATABASE",
    "PASSWORD",
    "USER",
    "PostgresCluster",
    "PostgresNotAvailable",
    "PostgresStartError",
    "ServerConnection",
    "find_pg_bin",
    "start_postgres",
    "wait_until",
]

USER = "poolwatch"
PASSWORD = "poolwatch-secret"
DATABASE = "poolwatch"
SUPERUSER = "postgres"
ADMIN_APPLICATION_NAME = "poolwatch-tests-admin"

FALLBACK_SYSTEM_USER = "poolwatch-pg"
_START_ATTEMPTS = 3
_START_TIMEOUT_S = 60


class PostgresNotAvailable(RuntimeError):
    """The PostgreSQL server programs (initdb, pg_ctl) cannot be found."""


class PostgresStartError(RuntimeError):
    """initdb or the server failed; the message carries their output."""


class ServerConnection(NamedTuple):
    """One client backend as listed by the server's ``pg_stat_activity``."""

    pid: int
    application_name: str
    state: str | None
    usename: str | None
    datname: str | None
    query: str | None


def find_pg_bin() -> Path:
    """Return the directory holding ``initdb`` and ``pg_ctl``."""
    override = os.environ.get("POOLWATCH_PG_BIN")
    if override:
        candidate = Path(override)
        if _has_server_programs(candidate):
            return candidate
        raise PostgresNotAvailable(
            f"POOLWATCH_PG_BIN={override} does not contain initdb and pg_ctl"
        )

    on_path = shutil.which("initdb")
    if on_path:
        # Follow symlinks so that pg_ctl and postgres of the same version are used.
        candidate = Path(on_path).resolve().parent
        if _has_server_programs(candidate):
            return candidate

    versioned = []
    for entry in glob.glob("/usr/lib/postgresql/*/bin"):
        version = Path(entry).parent.name
        if _has_server_programs(Path(entry)):
            versioned.append((_version_key(version), Path(entry)))
    if versioned:
        return max(versioned)[1]

    raise PostgresNotAvailable(
        "initdb/pg_ctl not found on PATH or under /usr/lib/postgresql/*/bin; "
        "run .ci/setup-system.sh to install PostgreSQL"
    )


def _has_server_programs(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in ("initdb", "pg_ctl"))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as, or None to run as the current user."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, FALLBACK_SYSTEM_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            FALLBACK_SYSTEM_USER,
        ],
        check=False,  # another test process may have created it meanwhile
        capture_output=True,
    )
    try:
        return pwd.getpwnam(FALLBACK_SYSTEM_USER)
    except KeyError:
        raise PostgresStartError(
            f"running as root and could not create the user {FALLBACK_SYSTEM_USER!r}"
        ) from None


def _others_can_traverse(path: Path) -> bool:
    """True when every directory down to ``path`` is searchable by anyone."""
    return all(os.stat(directory).st_mode & stat.S_IXOTH for directory in (path, *path.parents))


def _clean_env() -> dict[str, str]:
    # PGPORT, PGDATA, PGHOST... from the caller's shell must not steer initdb/pg_ctl.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    env.pop("LANG", None)
    return env


class PostgresCluster:
    """A running throwaway cluster. Build it with :func:`start_postgres`."""

    def __init__(
        self,
        *,
        bin_dir: Path,
        base_dir: Path,
        max_connections: int,
        run_as: pwd.struct_passwd | None,
    ) -> None:
        self.bin_dir = bin_dir
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.socket_dir = base_dir / "socket"
        self.log_file = base_dir / "postgres.log"
        self.max_connections = max_connections
        self.port = 0
        self.user = USER
        self.password = PASSWORD
        self.database = DATABASE
        self.host = "127.0.0.1"
        self._run_as = run_as
        self._running = False
        self._removed = False

    # -- connection strings -------------------------------------------------

    @property
    def url(self) -> str:
        """``postgresql://poolwatch:poolwatch-secret@127.0.0.1:PORT/poolwatch``."""
        return self.sqlalchemy_url(driver=None)

    def sqlalchemy_url(self, driver: str | None = "psycopg") -> str:
        """The URL with a SQLAlchemy dialect suffix, e.g. ``postgresql+psycopg://``."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"{scheme}://{credentials}@{self.host}:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        """A libpq key/value string for ``psycopg.connect()``."""
        return (
            f"host={self.host} port={self.port} dbname={self.database} "
            f"user={self.user} password={self.password}"
        )

    # -- lifecycle ----------------------------------------------------------

    def _run(
        self, args: Sequence[str | os.PathLike[str]], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [os.fspath(arg) for arg in args]
        if self._run_as is not None:
            command = ["runuser", "-u", self._run_as.pw_name, "--", *command]
        result = subprocess.run(
            command,
            cwd=self.base_dir,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S + 30,
            check=False,
        )
        if check and result.returncode != 0:
            raise PostgresStartError(
                f"{' '.join(command)} exited with {result.returncode}\n"
                f"{result.stdout}{result.stderr}{self._log_tail()}"
            )
        return result

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n--- server log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def _init(self) -> None:
        self.socket_dir.mkdir()
        if self._run_as is not None:
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        self._run(
            [
                self.bin_dir / "initdb",
                "--pgdata",
                self.data_dir,
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )
        # Only loopback TCP and the private socket directory may connect.
        (self.data_dir / "pg_hba.conf").write_text(
            "# written by tests/support/postgres.py\n"
            "local all all trust\n"
            "host  all all 127.0.0.1/32 trust\n"
        )
        settings: Mapping[str, str] = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": str(self.max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "'32MB'",
            "logging_collector": "off",
        }
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# poolwatch test settings\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _start(self) -> None:
        last_error: PostgresStartError | None = None
        # From here on stop() must try pg_ctl stop, even if start "fails" late.
        self._running = True
        for _ in range(_START_ATTEMPTS):
            self.port = _free_loopback_port()
            result = self._run(
                [
                    self.bin_dir / "pg_ctl",
                    "start",
                    "--wait",
                    "--timeout",
                    str(_START_TIMEOUT_S),
                    "--pgdata",
                    self.data_dir,
                    "--log",
                    self.log_file,
                    "-o",
                    f"-p {self.port}",
                ],
                check=False,
            )
            if result.returncode == 0:
                return
            last_error = PostgresStartError(
                f"pg_ctl start failed on port {self.port}\n"
                f"{result.stdout}{result.stderr}{self._log_tail()}"
            )
            if "could not bind" not in self._log_tail():
                break  # not a port race: retrying will not help
        assert last_error is not None
        raise last_error

    def _create_role_and_database(self) -> None:
        # Imported here: psycopg is needed only once a server runs.
        from psycopg import sql

        with self.admin_connection() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.database), sql.Identifier(self.user)
                )
            )

    def stop(self) -> None:
        """Kill the server (``pg_ctl stop -m immediate``) and delete its files.

        Safe to call more than once.
        """
        if self._running:
            self._running = False
            self._run(
                [
                    self.bin_dir / "pg_ctl",
                    "stop",
                    "--wait",
                    "--mode",
                    "immediate",
                    "--pgdata",
                    self.data_dir,
                ],
                check=False,
            )
        if not self._removed:
            self._removed = True
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- introspection --------------------------------------------------------

    def admin_connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """A superuser ``psycopg.Connection`` (autocommit) over the private socket.

        Its backend is named ``ADMIN_APPLICATION_NAME`` in pg_stat_activity.
        """
        import psycopg

        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            application_name=ADMIN_APPLICATION_NAME,
            autocommit=True,
            connect_timeout=10,
        )

    def server_connections(self, application_name: str | None = None) -> list[ServerConnection]:
        """Client backends connected to the server, as the server sees them.

        Excludes the backend this query runs on and PostgreSQL's own background
        processes. With ``application_name``, only backends that set it.
        """
        query = (
            "SELECT pid, application_name, state, usename, datname, query"
            " FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        params: tuple[str, ...] = ()
        if application_name is not None:
            query += " AND application_name = %s"
            params = (application_name,)
        query += " ORDER BY pid"
        with self.admin_connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [ServerConnection(*row) for row in rows]


def start_postgres(max_connections: int = 50) -> PostgresCluster:
    """Create and start a throwaway cluster; call ``stop()`` when done."""
    bin_dir = find_pg_bin()
    run_as = _server_user()

    parent = Path(tempfile.gettempdir())
    if run_as is not None and not _others_can_traverse(parent):
        parent = Path("/tmp")  # the server user must be able to reach its files
    base_dir = Path(tempfile.mkdtemp(prefix="poolwatch-pg-", dir=parent))

    cluster = PostgresCluster(
        bin_dir=bin_dir,
        base_dir=base_dir,
        max_connections=max_connections,
        run_as=run_as,
    )
    try:
        cluster._init()
        cluster._start()
        cluster._create_role_and_database()
    except BaseException:
        cluster.stop()
        raise
    # Safety net should a test run end without the fixture's teardown.
    atexit.register(cluster.stop)
    return cluster


def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.05
) -> bool:
    """Poll ``predicate()`` until it is truthy or ``timeout`` seconds pass."""
    return bool(poll(predicate, timeout, interval))
