"""No output path of the ``poolwatch`` command prints a secret, in any spelling, whatever it is.

Passwords and tokens drawn by hypothesis go into database URLs (URL and libpq forms), a
Prometheus URL, Grafana and Mimir tokens and an OTLP endpoint; fake servers on loopback echo
every credential they receive back in error bodies, raw and re-encoded; the doctor's text and
JSON, deploy errors and logs are then searched for every spelling of every secret.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from poolwatch import _redact
from poolwatch.cli import _log_handler, main
from tests.support import pipeline

USER = "app"
#: Passwords: any printable text (URLs carry them percent-encoded, libpq strings quoted).
passwords = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=8, max_size=24
)
#: Tokens travel in an HTTP header: printable ASCII without spaces.
tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=40)

EXAMPLES = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def spellings(secret: str) -> set[str]:
    """Every way ``secret`` could show up: as is, URL- and JSON-escaped, base64."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1],
             json.dumps(secret, ensure_ascii=False)[1:-1],
             base64.b64encode(secret.encode()).decode().rstrip("=")}  # fmt: skip
    return {form for form in forms if len(form) >= _redact.MIN_SECRET_LENGTH}


def leaks(output: str, *secrets: str) -> list[str]:
    """The spellings of ``secrets`` found in ``output``, in any letter case."""
    lowered = output.lower()
    return sorted({form for s in secrets for form in spellings(s) if form.lower() in lowered})


def echoed(credential: str) -> str:
    """``credential`` as a careless server repeats it: raw, escaped, re-encoded, re-cased."""
    forms = [credential, quote(credential, safe=""), quote_plus(credential), credential.lower(),
             credential.upper(), json.dumps(credential),
             base64.b64encode(credential.encode()).decode()]  # fmt: skip
    return " | ".join(forms)


class _Echo(BaseHTTPRequestHandler):
    """Refuses every request, quoting back the credentials it was sent."""

    def log_message(self, *args: Any) -> None:
        pass

    def _refuse(self) -> None:
        auth = self.headers.get("Authorization", "")
        scheme, _, credential = auth.partition(" ")
        said = [auth, credential]
        if scheme == "Basic":
            said.append(base64.b64decode(credential).decode("utf-8", "replace"))
        text = "rejected: " + " / ".join(echoed(item) for item in said if item)
        text += " path " + self.path
        prometheus = self.path.startswith("/api/v1/query")
        body = {"status": "error", "error": text} if prometheus else {"message": text}
        data = json.dumps(body).encode()
        self.send_response(400 if prometheus else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._refuse()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._refuse()


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    """A server on loopback that echoes credentials back in error bodies; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def closed() -> str:
    """``127.0.0.1:<port>`` where nothing listens."""
    return pipeline.loopback(pipeline.free_port())


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``poolwatch ARGS`` in this process: exit status, and stdout and stderr together."""
    out = io.StringIO()
    with (
        mock.patch.dict(os.environ, env or {}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(out),
    ):
        status = main(list(args))
    return status, out.getvalue()


def libpq_quoted(value: str) -> str:
    """``value`` as a libpq key=value string quotes it."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@given(password=passwords)
@EXAMPLES
def test_doctor_text_and_logs_never_show_a_password(password: str, echo: str, closed: str) -> None:
    """A libpq string and a Prometheus URL carrying the password: report and --debug logs."""
    host, port = closed.split(":")
    database = f"host={host} port={port} user={USER} password={libpq_quoted(password)}"
    prometheus = f"http://{USER}:{quote(password, safe='')}@{echo}"

    status, output = run("--debug", "doctor", "--database-url", database,
                         "--prometheus-url", prometheus, "--timeout", "2")  # fmt: skip

    assert status == 3, output
    assert "prometheus.unreachable" in output and "database.unreachable" in output
    assert "rejected:" in output  # the echo's body was printed, masked
    assert leaks(output, password, f"{USER}:{password}") == []


@given(password=passwords)
@EXAMPLES
def test_doctor_json_never_shows_a_password(password: str, echo: str, closed: str) -> None:
    """A postgresql:// URL with the password in its user part and its query string."""
    encoded = quote(password, safe="")
    database = f"postgresql://{USER}:{encoded}@{closed}/shop?sslpassword={encoded}"
    prometheus = f"http://{USER}:{encoded}@{echo}"

    status, output = run("doctor", "--database-url", database, "--prometheus-url", prometheus,
                         "--timeout", "2", "--json")  # fmt: skip

    assert status == 3, output
    report = json.loads(output)
    assert report["database"].startswith(f"postgresql://{USER}:***@")
    assert leaks(output, password, f"{USER}:{password}") == []


@given(token=tokens)
@EXAMPLES
def test_deploy_errors_never_show_the_token(token: str, echo: str) -> None:
    """Grafana and a Mimir ruler answer with the token quoted back in every encoding."""
    status, output = run("deploy", "grafana", "--timeout", "5",
                         env={"GRAFANA_URL": f"http://{echo}", "GRAFANA_TOKEN": token})  # fmt: skip
    assert status == 1, output
    assert "returned HTTP 500" in output
    ruler, ruled = run("deploy", "prometheus", "--ruler-url", f"http://{echo}", "--timeout", "5",
                       env={"MIMIR_TOKEN": token})  # fmt: skip
    assert ruler == 1, ruled
    assert leaks(output + ruled, token) == []


@given(password=passwords)
@EXAMPLES
def test_the_demo_never_shows_its_endpoints_password(password: str, closed: str) -> None:
    """An OTLP endpoint with credentials that cannot be reached: the error masks them."""
    endpoint = f"http://{USER}:{quote(password, safe='')}@{closed}"
    status, output = run("demo", "--otlp-endpoint", endpoint, "--output", os.devnull + "-none")
    assert status in (1, 2), output
    assert leaks(output, password) == []


@given(password=passwords, token=tokens)
@example(password="00000000", token='"0000000')  # a JSON value that starts with an escaped quote
@EXAMPLES
def test_log_lines_never_show_a_secret_they_carry(password: str, token: str) -> None:
    """The command's log formatter masks DSNs, libpq strings and auth headers in any record."""
    template = "connect to {} failed; retried with {} and header {}"
    assume(not leaks(template, password, token))
    _redact.forget_all()  # only what the formatter recognises, nothing remembered
    record = logging.LogRecord(
        "poolwatch", logging.WARNING, __file__, 1, template.format("%s", "%s", "%s"),
        (f"postgresql://{USER}:{quote(password, safe='')}@db/shop",
         f"host=db password={libpq_quoted(password)}", f"Authorization: Bearer {quote(token)}"),
        None,
    )  # fmt: skip
    try:
        raise ConnectionError(f'{{"token": {json.dumps(token)}, "sslpassword": "x"}}')
    except ConnectionError:
        record.exc_info = sys.exc_info()
    line = _log_handler(debug=False).format(record)
    assert leaks(line, password, token) == []
