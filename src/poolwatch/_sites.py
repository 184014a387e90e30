"""Borrow sites: where in the application a connection was taken, as code locations.

A site is a tuple of ``(code object, instruction offset)`` pairs for the application's own
frames, innermost first; line numbers are worked out only when a site is reported. Library
frames (the standard library, the packages of :data:`LIBRARY_PACKAGES` and those the user names
in ``library_packages``) are skipped; a package is recognised by its module name, so a wrapper
such as SQLModel is skipped wherever it is installed, and an application installed in
site-packages is still found. No frame object is kept, so no local variable and
no SQL parameter outlives the call; code objects are shared and cheap to hold.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import sysconfig
import threading
from collections.abc import Iterable, Mapping
from types import CodeType, FrameType
from typing import Any, Final

from poolwatch import catalog

Site = tuple[tuple[CodeType, int], ...]

#: Top-level packages whose frames are never the application's: database libraries, the
#: wrappers and frameworks that call them for the application, and the servers that run it.
LIBRARY_PACKAGES: Final = (
    "poolwatch",
    "opentelemetry",
    "wrapt",
    "greenlet",
    # database libraries and drivers
    "sqlalchemy",
    "django",
    "psycopg",
    "psycopg_pool",
    "psycopg2",
    "aiosqlite",
    "asyncpg",
    "pg8000",
    "pymysql",
    "MySQLdb",
    "aiomysql",
    # wrappers over them
    "sqlmodel",
    "flask_sqlalchemy",
    "alembic",
    "sqlalchemy_utils",
    "databases",
    "advanced_alchemy",
    "litestar",
    # frameworks and servers that call the application
    "fastapi",
    "starlette",
    "anyio",
    "sniffio",
    "asgiref",
    "flask",
    "werkzeug",
    "channels",
    "uvicorn",
    "gunicorn",
    "hypercorn",
    "daphne",
    "waitress",
    "uvloop",
    "celery",
    "kombu",
    "billiard",
)

_MAX_CACHED_FILES: Final = 65_536
_MAX_AWAIT_DEPTH: Final = 256
_AUTO_TASK: Final = re.compile(r"Task-\d+\Z")


_INSTALLED = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)


def _library_prefixes(packages: Iterable[str]) -> tuple[str, ...]:
    prefixes: set[str] = set()
    for name in packages:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) if module else None
        if origin:
            prefixes.add(os.path.dirname(origin) + os.sep)
        else:
            for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
                prefixes.add(os.path.join(base, name) + os.sep)
    return tuple(sorted(prefixes))


def _origins(modules: Iterable[str]) -> tuple[str, ...]:
    """Where the source of each module (a package: its directory) is, for those that exist."""
    found: list[str] = []
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # a parent that cannot be imported, a bad name
            spec = None
        origin = spec.origin if spec is not None else None
        if not origin:
            continue
        if spec is not None and spec.submodule_search_locations:
            found.append(os.path.dirname(origin) + os.sep)
        else:
            found.append(origin)
    return tuple(found)


APP, THIRD_PARTY, LIBRARY = 0, 1, 2


class SiteCapture:
    """Captures application frames from the current stack, remembering how each code is classed.

    Code is the application's (kept), third-party (anything else installed in site-packages:
    kept only when no application frame is found, as for an application installed as a wheel),
    or library (the standard library and the packages in :data:`LIBRARY_PACKAGES`: skipped).
    """

    def __init__(
        self,
        limit: int,
        extra_library_paths: Iterable[str] = (),
        library_packages: Iterable[str] = (),
        app_packages: Iterable[str] = (),
    ) -> None:
        self.limit = limit
        #: Modules (and packages) whose frames are the application's wherever they live.
        self.apps = tuple(app_packages)
        self._app_modules = tuple(f"{name}." for name in self.apps)
        self._app_paths = _origins(self.apps)
        #: Top-level packages whose frames are skipped.
        self.packages = frozenset(LIBRARY_PACKAGES) | frozenset(library_packages)
        self._prefixes = _library_prefixes(self.packages) + tuple(extra_library_paths)
        self._stdlib = sysconfig.get_paths()["stdlib"] + os.sep
        # Keyed by file name, not code object: a code object's hash is recomputed from its
        # contents on every lookup, while a string caches its hash.
        self._kinds: dict[str, int] = {}

    def kind(self, code: CodeType, module: object = None) -> int:
        """APP, THIRD_PARTY or LIBRARY for ``code`` of ``module`` (its frame's ``__name__``),
        cached per file."""
        filename = code.co_filename
        known = self._kinds.get(filename)
        if known is None:
            known = self._classify(filename, module)
            if len(self._kinds) < _MAX_CACHED_FILES:
                self._kinds[filename] = known
        return known

    def kind_of(self, frame: FrameType) -> int:
        """:meth:`kind` of a frame's code, its module read from the frame."""
        return self.kind(frame.f_code, frame.f_globals.get("__name__"))

    def _classify(self, filename: str, module: object = None) -> int:
        if self.apps and (
            (
                isinstance(module, str)
                and (module in self.apps or module.startswith(self._app_modules))
            )
            or filename.startswith(self._app_paths)
        ):
            return APP
        if isinstance(module, str) and module.partition(".")[0] in self.packages:
            return LIBRARY
        # "<...>": frozen modules and generated code (SQLAlchemy's decorators, dataclasses)
        if filename.startswith(self._prefixes) or filename.startswith("<"):
            return LIBRARY
        if any(part in filename for part in _INSTALLED):
            return THIRD_PARTY
        return LIBRARY if filename.startswith(self._stdlib) else APP

    def capture(self, depth: int = 2, limit: int | None = None) -> Site:
        """Up to ``limit`` (default: this capture's) application frames of the caller's stack,
        innermost first. The walk stops at the last frame it needs: fewer frames, less work.

        Under SQLAlchemy's asyncio support the checkout runs in a greenlet whose stack ends at
        the greenlet's start; the application's coroutines are on the parent greenlet's stack,
        so the walk continues there.
        """
        site = self.from_frame(sys._getframe(depth), limit)
        if site:
            return site
        greenlet = sys.modules.get("greenlet")
        if greenlet is None:
            return site
        parent = greenlet.getcurrent().parent
        while parent is not None and not site:
            site = self.from_frame(parent.gr_frame, limit)
            parent = parent.parent
        return site

    def of_holder(
        self, thread: threading.Thread, task: Any, frames: Mapping[int, FrameType]
    ) -> Site:
        """Where a holder is right now: its asyncio task's stack, else its thread's.

        ``frames`` is :func:`sys._current_frames` taken once for all holders. A task suspended at
        an ``await`` shows the coroutines that hold the connection; a thread shows its live stack.
        """
        if task is not None and not task.done():
            site = self._from_frames(reversed(awaiting(task.get_coro())))
            if site:
                return site
        return self.from_frame(frames.get(thread.ident)) if thread.ident is not None else ()

    def _from_frames(self, frames: Iterable[FrameType]) -> Site:
        """Up to ``limit`` application frames of ``frames`` (innermost first)."""
        found: list[tuple[CodeType, int]] = []
        fallback: list[tuple[CodeType, int]] = []
        kinds = self._kinds
        limit = self.limit
        for frame in frames:
            code = frame.f_code
            kind = kinds.get(code.co_filename)
            if kind is None:
                kind = self.kind_of(frame)
            if kind == APP:
                found.append((code, frame.f_lasti))
                if len(found) >= limit:
                    break
            elif kind == THIRD_PARTY and len(fallback) < limit:
                fallback.append((code, frame.f_lasti))
        return tuple(found or fallback)

    def from_frame(self, frame: FrameType | None, limit: int | None = None) -> Site:
        """Up to ``limit`` (default: this capture's) application frames from ``frame`` outwards
        (any thread's stack).

        The loop of :meth:`_from_frames` written out over ``f_back``: this runs at checkouts,
        and a generator feeding the shared loop costs a third more.
        """
        found: list[tuple[CodeType, int]] = []
        fallback: list[tuple[CodeType, int]] = []
        kinds = self._kinds
        limit = limit or self.limit
        while frame is not None:
            code = frame.f_code
            kind = kinds.get(code.co_filename)
            if kind is None:
                kind = self.kind_of(frame)
            if kind == APP:
                found.append((code, frame.f_lasti))
                if len(found) >= limit:
                    break
            elif kind == THIRD_PARTY and len(fallback) < limit:
                fallback.append((code, frame.f_lasti))
            frame = frame.f_back
        return tuple(found or fallback)


def task_label(capture: SiteCapture, task: Any) -> str | None:
    """How a holder's asyncio task is named: its own name, unless that is asyncio's
    ``Task-N`` or a library's (AnyIO names tasks after the framework callable that started
    them), in which case the outermost application coroutine it is running."""
    if task is None:
        return None
    name: str = task.get_name()
    if not (_AUTO_TASK.match(name) or name.partition(".")[0] in capture.packages) or task.done():
        return name
    fallback = None
    for frame in awaiting(task.get_coro()):
        kind = capture.kind_of(frame)
        if kind == APP:
            return frame.f_code.co_qualname
        if kind == THIRD_PARTY and fallback is None:
            fallback = frame.f_code.co_qualname
    return fallback or name


def awaiting(coroutine: Any) -> list[FrameType]:
    """The frames of ``coroutine`` and of what it awaits, outermost first.

    ``Task.get_stack()`` gives only the outermost frame of a suspended task (its frames are
    linked through what each awaits, not through ``f_back``), so the chain is followed here.
    """
    frames: list[FrameType] = []
    while coroutine is not None and len(frames) < _MAX_AWAIT_DEPTH:
        frame = _first_attribute(coroutine, ("cr_frame", "ag_frame", "gi_frame"))
        if frame is None:
            break
        frames.append(frame)
        coroutine = _first_attribute(coroutine, ("cr_await", "ag_await", "gi_yieldfrom"))
    return frames


def _first_attribute(target: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        value = getattr(target, name, None)
        if value is not None:
            return value
    return None


def attributes(site: Site) -> dict[str, Any]:
    """The ``code.*`` attributes of the innermost application frame of ``site`` (none if empty)."""
    if not site:
        return {}
    code, offset = site[0]
    return {
        catalog.CODE_FUNCTION: code.co_qualname,
        catalog.CODE_FILE: code.co_filename,
        catalog.CODE_LINE: line_of(code, offset),
        catalog.CODE_STACKTRACE: stacktrace(site),
    }


def line_of(code: CodeType, offset: int) -> int:
    """The source line of the instruction at byte ``offset`` in ``code``."""
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return line
    return code.co_firstlineno


def describe(site: Site) -> str:
    """``path:line in function`` of the innermost application frame, or ``unknown``."""
    if not site:
        return "unknown"
    code, offset = site[0]
    return f"{_short_path(code.co_filename)}:{line_of(code, offset)} in {code.co_qualname}"


def function_of(site: Site) -> tuple[str, int]:
    """``(path in function, line)`` of the innermost application frame: the key holders group by."""
    if not site:
        return "unknown", 0
    code, offset = site[0]
    return f"{_short_path(code.co_filename)} in {code.co_qualname}", line_of(code, offset)


def stacktrace(site: Site) -> str:
    """The whole site as text, innermost frame first, one ``File "...", line N, in f`` per line."""
    return "\n".join(
        f'  File "{code.co_filename}", line {line_of(code, offset)}, in {code.co_qualname}'
        for code, offset in site
    )


def _short_path(filename: str) -> str:
    cwd = os.getcwd() + os.sep
    return filename[len(cwd) :] if filename.startswith(cwd) else filename
