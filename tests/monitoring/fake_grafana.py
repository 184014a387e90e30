"""A stand-in for Grafana's HTTP API on loopback, checking request shapes as Grafana documents them.

Implements the folder, dashboard and alert-rule provisioning endpoints ``poolwatch deploy
grafana`` uses, keeps their state in memory, records every request, and lists any request whose
method, path, auth or body does not match Grafana's published API in ``violations``.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RULE_FIELDS = {"title", "ruleGroup", "folderUID", "condition", "data", "noDataState",
               "execErrState", "for"}  # fmt: skip
NO_DATA = {"Alerting", "NoData", "OK", "KeepLast"}
EXEC_ERR = {"OK", "Alerting", "Error", "KeepLast"}


@dataclass
class State:
    """What the fake Grafana holds, and what it was asked."""

    token: str
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    #: (method, path prefix, nth matching request) -> answer 500 to that request.
    fail: tuple[str, str, int] | None = None

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    def snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps([self.folders, self.dashboards, self.rules]))  # type: ignore[no-any-return]


class Handler(BaseHTTPRequestHandler):
    state: State

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: Any = None) -> None:
        data = json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length) if length else b""
        if raw and self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            self.state.violations.append(f"{self.command} {self.path}: body is not JSON")
        return json.loads(raw) if raw else None

    def _handle(self) -> None:
        state = self.state
        state.requests.append((self.command, self.path))
        if self.headers.get("Authorization") != f"Bearer {state.token}":
            state.violations.append(f"{self.command} {self.path}: missing bearer token")
            return self._reply(401, {"message": "Unauthorized"})
        if self._should_fail():
            return self._reply(500, {"message": "internal error: database is locked"})
        body = self._body() if self.command in {"POST", "PUT"} else None
        for pattern, method, handler in ROUTES:
            match = re.fullmatch(pattern, self.path)
            if match and method == self.command:
                status, answer = handler(state, body, *match.groups())
                return self._reply(status, answer)
        state.violations.append(f"{self.command} {self.path}: no such Grafana endpoint")
        return self._reply(404, {"message": "Not found"})

    def _should_fail(self) -> bool:
        fail = self.state.fail
        if fail is None or self.command != fail[0] or not self.path.startswith(fail[1]):
            return False
        seen = sum(1 for m, p in self.state.requests if m == fail[0] and p.startswith(fail[1]))
        return seen == fail[2]

    do_GET = do_POST = do_PUT = do_DELETE = _handle


def _violation(state: State, text: str) -> tuple[int, dict[str, str]]:
    state.violations.append(text)
    return 400, {"message": text}


def get_folder(state: State, _body: Any, uid: str) -> tuple[int, Any]:
    return (200, state.folders[uid]) if uid in state.folders else (404, {"message": "not found"})


def create_folder(state: State, body: Any) -> tuple[int, Any]:
    if not isinstance(body, dict) or not body.get("title") or "uid" not in body:
        return _violation(state, f"POST /api/folders: expected {{uid, title}}, got {body}")
    state.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"]}
    return 200, state.folders[body["uid"]]


def update_folder(state: State, body: Any, uid: str) -> tuple[int, Any]:
    if not isinstance(body, dict) or not body.get("title"):
        return _violation(state, f"PUT /api/folders/{uid}: expected a title, got {body}")
    if "version" not in body and body.get("overwrite") is not True:
        return _violation(state, f"PUT /api/folders/{uid}: needs version or overwrite")
    if uid not in state.folders:
        return 404, {"message": "folder not found"}
    state.folders[uid] = {**state.folders[uid], "title": body["title"]}
    return 200, state.folders[uid]


def delete_folder(state: State, _body: Any, uid: str) -> tuple[int, Any]:
    state.folders.pop(uid, None)
    return 200, {"message": "Folder deleted"}


def get_dashboard(state: State, _body: Any, uid: str) -> tuple[int, Any]:
    if uid not in state.dashboards:
        return 404, {"message": "Dashboard not found"}
    return 200, state.dashboards[uid]


def save_dashboard(state: State, body: Any) -> tuple[int, Any]:
    if not isinstance(body, dict) or set(body) - {"dashboard", "folderUid", "overwrite",
                                                   "message"}:  # fmt: skip
        return _violation(state, f"POST /api/dashboards/db: unexpected keys {sorted(body)}")
    model, folder = body.get("dashboard"), body.get("folderUid")
    if not isinstance(model, dict) or not model.get("uid") or not model.get("title"):
        return _violation(state, "POST /api/dashboards/db: dashboard needs uid and title")
    if body.get("overwrite") is not True or folder not in state.folders:
        return _violation(state, "POST /api/dashboards/db: overwrite and an existing folderUid")
    version = state.dashboards.get(model["uid"], {}).get("dashboard", {}).get("version", 0) + 1
    stored = {**model, "id": 7, "version": version}
    state.dashboards[model["uid"]] = {"dashboard": stored, "meta": {"folderUid": folder}}
    return 200, {"id": 7, "uid": model["uid"], "status": "success", "version": version}


def delete_dashboard(state: State, _body: Any, uid: str) -> tuple[int, Any]:
    state.dashboards.pop(uid, None)
    return 200, {"title": uid, "message": "Dashboard deleted"}


def get_rule(state: State, _body: Any, uid: str) -> tuple[int, Any]:
    return (200, state.rules[uid]) if uid in state.rules else (404, {"message": "not found"})


def _rule_problems(body: Any) -> str:
    if not isinstance(body, dict):
        return "body is not an object"
    missing = RULE_FIELDS - set(body)
    if missing:
        return f"missing {sorted(missing)}"
    if body["noDataState"] not in NO_DATA or body["execErrState"] not in EXEC_ERR:
        return "bad noDataState/execErrState"
    refs = [query.get("refId") for query in body["data"]]
    if body["condition"] not in refs or not all(q.get("datasourceUid") and q.get("model")
                                                for q in body["data"]):  # fmt: skip
        return "condition must name a query; each query needs datasourceUid and model"
    return ""


def create_rule(state: State, body: Any) -> tuple[int, Any]:
    problem = _rule_problems(body)
    if problem:
        return _violation(state, f"POST alert-rules: {problem}")
    if body["folderUID"] not in state.folders:
        return _violation(state, "POST alert-rules: folder does not exist")
    state.rules[body["uid"]] = {**body, "id": len(state.rules) + 1, "provenance": "api",
                                "orgID": 1}  # fmt: skip
    return 201, state.rules[body["uid"]]


def update_rule(state: State, body: Any, uid: str) -> tuple[int, Any]:
    problem = _rule_problems(body)
    if problem or uid not in state.rules:
        return _violation(state, f"PUT alert-rules/{uid}: {problem or 'no such rule'}")
    state.rules[uid] = {**body, "uid": uid}
    return 200, state.rules[uid]


def delete_rule(state: State, _body: Any, uid: str) -> tuple[int, Any]:
    state.rules.pop(uid, None)
    return 204, None


ROUTES: list[tuple[str, str, Any]] = [
    (r"/api/folders/([^/?]+)", "GET", get_folder),
    (r"/api/folders", "POST", create_folder),
    (r"/api/folders/([^/?]+)", "PUT", update_folder),
    (r"/api/folders/([^/?]+)", "DELETE", delete_folder),
    (r"/api/dashboards/uid/([^/?]+)", "GET", get_dashboard),
    (r"/api/dashboards/db", "POST", save_dashboard),
    (r"/api/dashboards/uid/([^/?]+)", "DELETE", delete_dashboard),
    (r"/api/v1/provisioning/alert-rules/([^/?]+)", "GET", get_rule),
    (r"/api/v1/provisioning/alert-rules", "POST", create_rule),
    (r"/api/v1/provisioning/alert-rules/([^/?]+)", "PUT", update_rule),
    (r"/api/v1/provisioning/alert-rules/([^/?]+)", "DELETE", delete_rule),
]


class FakeGrafana:
    """The server on 127.0.0.1 and a free port, serving from a thread until closed."""

    def __init__(self, token: str) -> None:
        self.state = State(token)
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
