"""Class-level replacements of library methods, marked so they can be told apart and undone.

A replacement is a plain function set on the class in place of the library's own. On a path
taken by every checkout or every session call it costs a fraction of a ``wrapt`` proxy, which
builds a bound wrapper object on each attribute access before making the call.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Makes the replacement of one method from the original function.
Maker = Callable[[Callable[..., Any]], Callable[..., Any]]


def mark(replacement: F, original: Callable[..., Any]) -> F:
    """Give ``replacement`` the name, docstring, ``__wrapped__`` and signature of ``original``, and
    the mark :func:`is_replacement` reads.

    The signature is set outright: ``inspect.getfullargspec`` (used by libraries and test
    suites to read a method's parameters) does not follow ``__wrapped__``.
    """
    functools.update_wrapper(replacement, original)
    with contextlib.suppress(TypeError, ValueError):  # a callable without one: leave it
        replacement.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
    replacement._poolwatch = True  # type: ignore[attr-defined]
    return replacement


def is_replacement(function: object) -> bool:
    """Whether ``function`` is one of poolwatch's replacements."""
    return getattr(function, "_poolwatch", False) is True


class Replacements:
    """The methods one adapter replaced, each with the object it replaced, to restore exactly."""

    def __init__(self) -> None:
        self._originals: dict[tuple[type, str], Any] = {}

    def replace(self, cls: type, name: str, make: Maker) -> bool:
        """Replace ``cls.name`` (defined on ``cls`` itself) by ``make(original)``, marked.

        Returns False, changing nothing, when ``cls`` does not define ``name`` or it is replaced
        already.
        """
        original = vars(cls).get(name)
        if original is None or (cls, name) in self._originals or is_replacement(original):
            return False
        self._originals[cls, name] = original
        setattr(cls, name, mark(make(original), original))
        return True

    def restore(self) -> None:
        """Put every original back, in the reverse order of replacement."""
        for (cls, name), original in reversed(list(self._originals.items())):
            setattr(cls, name, original)
        self._originals.clear()
