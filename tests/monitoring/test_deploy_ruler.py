"""`poolwatch deploy prometheus --ruler-url` against a fake Mimir/Cortex ruler API on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from poolwatch.cli import main

PREFIX = "/prometheus/config/v1/rules/poolwatch"


class Ruler:
    """Rule groups by name for one namespace; POST body is one group in YAML, as Mimir expects."""

    def __init__(self) -> None:  # noqa: C901 - the handler class is defined inline
        self.groups: dict[str, Any] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.fail_post: int | None = None
        ruler = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, text: str = "") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

            def do_GET(self) -> None:
                ruler.requests.append(("GET", self.path, dict(self.headers)))
                name = self.path.removeprefix(PREFIX + "/")
                if name in ruler.groups:
                    return self._reply(200, yaml.safe_dump(ruler.groups[name]))
                return self._reply(404, "group does not exist")

            def do_POST(self) -> None:
                ruler.requests.append(("POST", self.path, dict(self.headers)))
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts = sum(1 for m, _p, _h in ruler.requests if m == "POST")
                if self.path != PREFIX or self.headers["Content-Type"] != "application/yaml":
                    return self._reply(400, "bad request")
                if posts == ruler.fail_post:
                    return self._reply(500, "ruler storage unavailable")
                group = yaml.safe_load(body)
                ruler.groups[group["name"]] = group
                return self._reply(202)

            def do_DELETE(self) -> None:
                ruler.requests.append(("DELETE", self.path, dict(self.headers)))
                ruler.groups.pop(self.path.removeprefix(PREFIX + "/"), None)
                return self._reply(202)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def ruler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ruler]:
    """A fake ruler, with MIMIR_TOKEN and MIMIR_TENANT set."""
    monkeypatch.setenv("MIMIR_TOKEN", "mimir-secret")
    monkeypatch.setenv("MIMIR_TENANT", "team-db")
    fake = Ruler()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_groups_are_pushed_with_tenant_and_token(ruler: Ruler) -> None:
    """Each rule group is POSTed as YAML to the namespace, with X-Scope-OrgID and the token."""
    assert main(["deploy", "prometheus", "--ruler-url", ruler.url]) == 0

    assert sorted(ruler.groups) == [
        "poolwatch-django", "poolwatch-pgbouncer", "poolwatch-pool", "poolwatch-postgresql",
        "poolwatch-recording", "poolwatch-telemetry",
    ]  # fmt: skip
    posts = [headers for method, _path, headers in ruler.requests if method == "POST"]
    assert all(h["X-Scope-OrgID"] == "team-db" for h in posts)
    assert all(h["Authorization"] == "Bearer mimir-secret" for h in posts)


def test_a_failed_push_removes_the_groups_it_created(
    ruler: Ruler, capsys: pytest.CaptureFixture[str]
) -> None:
    """When the third group is refused, the two already created are deleted again."""
    ruler.fail_post = 3

    assert main(["deploy", "prometheus", "--ruler-url", ruler.url]) == 1

    assert ruler.groups == {}
    err = capsys.readouterr().err
    assert "returned HTTP 500" in err and "mimir-secret" not in err
