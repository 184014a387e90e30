"""Bad input through every command, as a shell runs it: a documented exit status, one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import pipeline

#: Where even root cannot create files (sysfs), else a directory made read-only.
ROOT_READ_ONLY = Path("/sys/kernel")


@dataclass(frozen=True)
class Case:
    """One command line, the exit status it must give and a phrase its error must contain."""

    name: str
    args: tuple[str, ...]
    status: int
    says: str
    env: tuple[tuple[str, str], ...] = ()


def _closed() -> str:
    return f"http://{pipeline.loopback(pipeline.free_port())}"


def cases(tmp: Path, read_only: Path) -> list[Case]:
    """Every command with input it cannot use."""
    a_file = tmp / "a-file"  # the test writes it
    under_file = a_file / "sub"
    no_env = (("GRAFANA_URL", ""), ("GRAFANA_TOKEN", ""))
    closed = _closed()
    return [
        Case("no command", (), 2, "required"),
        Case("unknown command", ("frobnicate",), 2, "invalid choice"),
        Case("demo duration text", ("demo", "--duration", "abc"), 2,
             "expected seconds above 0 (under a day), not 'abc'"),
        Case("demo duration zero", ("demo", "--duration", "0"), 2, "expected seconds above 0"),
        Case("demo output is a file", ("demo", "--output", str(a_file)), 2, "is a file"),
        Case("demo output under a file", ("demo", "--output", str(under_file)), 2,
             "cannot create it"),
        Case("demo output read-only", ("demo", "--output", str(read_only)), 2, str(read_only)),
        Case("demo dead endpoint", ("demo", "--output", str(tmp / "d1"), "--otlp-endpoint",
                                    closed), 1, "cannot send telemetry"),
        Case("demo endpoint not a URL", ("demo", "--output", str(tmp / "d2"),
                                         "--otlp-endpoint", "nowhere"), 2, "--otlp-endpoint"),
        Case("doctor without url", ("doctor",), 2, "--database-url"),
        Case("doctor negative pool", ("doctor", "--database-url", "postgresql:///x",
                                      "--pool-size", "-1"), 2, "expected a whole number"),
        Case("doctor timeout text", ("doctor", "--database-url", "postgresql:///x",
                                     "--timeout", "soon"), 2, "expected seconds above 0"),
        Case("doctor recycle text", ("doctor", "--database-url", "postgresql:///x",
                                     "--pool-recycle", "nan"), 2, "finite number"),
        Case("doctor bad ipv6", ("doctor", "--database-url", "postgresql://u:pw@[::1/db"), 3,
             "database.invalid_url"),
        Case("doctor mysql", ("doctor", "--database-url", "mysql://u:pw@127.0.0.1/db"), 3,
             "database.not_postgresql"),
        Case("doctor closed port", ("doctor", "--database-url",
                                    f"postgresql://u:pw@{closed[7:]}/db"), 3,
             "database.unreachable"),
        Case("doctor bad prometheus", ("doctor", "--database-url", "mysql://x@h/db",
                                       "--prometheus-url", "http://[::1"), 3,
             "prometheus.unreachable"),
        Case("generate root is a file", ("generate", "--root", str(a_file)), 2,
             "is not a directory"),
        Case("generate under a file", ("generate", "--root", str(under_file)), 1,
             "Not a directory"),
        Case("generate read-only", ("generate", "--root", str(read_only)), 1, str(read_only)),
        Case("generate missing config", ("generate", "--config", str(tmp / "none.yaml")), 2,
             "none.yaml"),
        Case("generate bad override", ("generate", "--set", "nonsense"), 2, "nonsense"),
        Case("deploy without target", ("deploy",), 2, "required"),
        Case("grafana without credentials", ("deploy", "grafana"), 2, "set GRAFANA_URL",
             no_env),
        Case("grafana closed port", ("deploy", "grafana", "--timeout", "5"), 1,
             "failed: ConnectError", (("GRAFANA_URL", closed), ("GRAFANA_TOKEN", "t0ken-x"))),
        Case("grafana timeout text", ("deploy", "grafana", "--timeout", "x"), 2,
             "expected seconds above 0"),
        Case("prometheus no destination", ("deploy", "prometheus"), 2, "required"),
        Case("prometheus missing dir", ("deploy", "prometheus", "--rules-dir",
                                        str(tmp / "none")), 1, "does not exist"),
        Case("prometheus read-only dir", ("deploy", "prometheus", "--rules-dir",
                                          str(read_only)), 1, "writing rule files failed"),
        Case("prometheus missing promtool", ("deploy", "prometheus", "--rules-dir", str(tmp),
                                             "--promtool", str(tmp / "no-promtool")), 1,
             "no such executable"),
        Case("prometheus closed ruler", ("deploy", "prometheus", "--ruler-url", closed,
                                         "--timeout", "5"), 1, "failed: ConnectError"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def read_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory no file can be created in, for root as for anyone else."""
    if os.geteuid() == 0:
        return ROOT_READ_ONLY
    directory = tmp_path_factory.mktemp("read-only")
    directory.chmod(0o555)
    return directory


def poolwatch(
    args: tuple[str, ...], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """``poolwatch ARGS`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "poolwatch.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd, check=False)  # fmt: skip


CASE_NAMES = [case.name for case in cases(Path("/nonexistent"), ROOT_READ_ONLY)]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_gets_its_exit_status_and_a_message_without_traceback(
    name: str, tmp_path: Path, read_only: Path
) -> None:
    """Each bad command line exits with its documented status and says why, in plain words."""
    (tmp_path / "cwd").mkdir()
    (tmp_path / "a-file").write_text("not a directory\n")
    case = next(c for c in cases(tmp_path, read_only) if c.name == name)
    env = pipeline.clean_env(**dict(case.env))
    result = poolwatch(case.args, env, tmp_path / "cwd")
    output = result.stdout + result.stderr
    assert result.returncode == case.status, output
    assert "Traceback" not in output
    assert case.says in output
    assert "_positive_seconds" not in output and "_count" not in output


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    """``--debug`` adds the traceback to the one-line error."""
    result = poolwatch(("--debug", "generate", "--root", str(tmp_path / "f" / "x")),
                       pipeline.clean_env(), tmp_path)  # fmt: skip
    assert result.returncode == 0  # a missing directory is created
    (tmp_path / "file").write_text("")
    result = poolwatch(("generate", "--root", str(tmp_path / "file" / "x"), "--debug"),
                       pipeline.clean_env(), tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("poolwatch generate: Not a directory")


def test_doctor_without_its_driver_names_the_missing_driver(tmp_path: Path) -> None:
    """psycopg not installed: exit 3 with database.driver_missing and the install hint."""
    code = ("import sys; sys.modules['psycopg'] = None; from poolwatch.cli import main; "
            "sys.exit(main(['doctor', '--database-url', 'postgresql://u@127.0.0.1:1/db']))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env=pipeline.clean_env(), check=False)  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert "database.driver_missing" in result.stdout
    assert "pip install 'poolwatch[doctor]'" in result.stdout
    assert "database.unreachable" not in result.stdout


@pytest.mark.parametrize(
    "command",
    [(), ("demo",), ("doctor",), ("generate",), ("deploy",), ("deploy", "grafana"),
     ("deploy", "prometheus")],
)  # fmt: skip
def test_every_command_has_a_description_and_names_its_extra(command: tuple[str, ...]) -> None:
    """``--help`` explains the command in words (no markup) and which extra it needs."""
    result = poolwatch((*command, "--help"), pipeline.clean_env(), Path.cwd())
    assert result.returncode == 0
    text = result.stdout
    assert "``" not in text
    _usage, _, rest = text.partition("\n\n")
    description = rest.split("\n\n", 1)[0]
    assert len(description.split()) >= 12, text
    extras = {"demo": "poolwatch[demo]", "doctor": "poolwatch[doctor]"}
    if command:
        assert extras.get(command[0], "poolwatch[monitoring]") in text
    else:
        assert "exit status:" in text and "130" in text and "--debug" in text
