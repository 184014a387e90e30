"""HTTP and rollback plumbing shared by the deploy commands.

:class:`Http` turns every failed request into a :class:`DeployError` whose message names the
method, the URL (without credentials) and the status, never the token. :class:`Transaction`
remembers how to undo each write so a failed deploy can restore the previous state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx

from poolwatch._redact import redact


class DeployError(Exception):
    """A deploy step failed; the message is safe to print (no credentials)."""


class Http:
    """A small HTTP client that turns failures into :class:`DeployError` without leaking secrets."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._secret = token or ""
        self._where = _public_origin(base_url)
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers={**auth, **(headers or {})}, timeout=timeout
        )

    def close(self) -> None:
        self._client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """Send a request; None on 404, the response on 2xx, :class:`DeployError` otherwise."""
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DeployError(
                f"{method} {self._where}{path} failed: {type(exc).__name__}"
            ) from None
        if response.status_code == 404 and method == "GET":
            return None
        if not response.is_success:
            raise DeployError(
                f"{method} {self._where}{path} returned HTTP {response.status_code}: "
                f"{_short(self._redact(response.text))}"
            )
        return response

    def _redact(self, text: str) -> str:
        """``text`` without the token in any spelling (escaped, encoded, another case)."""
        return redact(text, [self._secret])


def _public_origin(url: str) -> str:
    """``scheme://host:port`` with any user:password@ part dropped."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class Transaction:
    """Writes made so far and how to undo each; :meth:`rollback` undoes them newest first."""

    undo: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def record(self, what: str, action: Callable[[], object]) -> None:
        self.undo.append((what, action))

    def rollback(self, err: TextIO) -> list[str]:
        """Undo every write, newest first; returns the writes that could not be undone."""
        stuck = []
        for what, action in reversed(self.undo):
            try:
                action()
            except DeployError as exc:
                print(f"rollback of {what} failed: {exc}", file=err)
                stuck.append(what)
            else:
                print(f"rolled back {what}", file=err)
        self.undo.clear()
        return stuck


def report_rollback(stuck: list[str], out: TextIO) -> None:
    """What a failed deploy left behind: nothing, or the writes whose undo failed too."""
    if not stuck:
        print("nothing changed: the deploy failed and every write made was undone", file=out)
    for what in stuck:
        print(f"still applied (its rollback failed): {what}", file=out)


def plan_line(action: str, what: str, dry_run: bool) -> str:
    """``create: x``, or ``would create: x`` on a dry run (``unchanged`` reads the same either way)."""
    prefix = "would " if dry_run and action != "unchanged" else ""
    return f"{prefix}{action}: {what}"


def contains(current: Any, desired: Any) -> bool:
    """True when every key and value of ``desired`` is in ``current`` (extra keys allowed)."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(
            key in current and contains(current[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(current) == len(desired)
            and all(contains(c, d) for c, d in zip(current, desired, strict=True))
        )
    return bool(current == desired)
