"""The boundary between poolwatch and the application: our own errors stop here.

Every hook catches its own exceptions and hands them to :func:`internal_error`, which counts
them per hook and logs the first one of each hook with its traceback. Nothing is re-raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from poolwatch import _state

T = TypeVar("T")

_logger = logging.getLogger("poolwatch")


@dataclass(frozen=True)
class PrivateHook:
    """A private attribute of another library that poolwatch touches, and what breaks without.

    Modules that touch OpenTelemetry SDK internals list theirs as ``PRIVATE_HOOKS``, checked by
    their tests and probed at run time (a missing one is warned about and counted here).
    """

    owner: str
    attribute: str
    breaks: str


def internal_error(hook: str, exc: BaseException) -> None:
    """Count an error raised inside poolwatch's ``hook`` and log it the first time it is seen."""
    try:
        with _state.lock:
            _state.errors[hook] += 1
            first = _state.errors[hook] == 1
        if first:
            _logger.warning(
                "poolwatch: internal error in %s; telemetry for it is degraded, the "
                "application is not affected (further errors here are counted, not logged)",
                hook,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
    except Exception:  # noqa: BLE001  # pragma: no cover - logging itself failed
        pass


def count(hook: str) -> None:
    """Count a problem found inside poolwatch that its caller reports itself."""
    with _state.lock:
        _state.errors[hook] += 1


def guarded(hook: str, fn: Callable[..., T], *args: Any) -> T | None:
    """``fn(*args)``, or None after counting and logging an error raised inside poolwatch."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the hook boundary
        internal_error(hook, exc)
        return None


def error_counts() -> dict[str, int]:
    """Errors caught so far, per hook."""
    with _state.lock:
        return dict(_state.errors)


def warn_once(key: str, message: str, *args: object) -> bool:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    with _state.lock:
        if key in _state.warned:
            return False
        _state.warned.add(key)
    _logger.warning(message, *args)
    return True
