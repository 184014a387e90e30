"""Class-level replacements of library methods, marked so they can be told apart and undone.

A replacement is a plain function set on the class in place of the library's own. On a path
taken by every checkout or every session call it costs a fraction of a ``wrapt`` proxy, which
builds a bound wrapper object on each attribute access before making the call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Makes the replacement of one method from the original function.
Maker = Callable[[Callable[..., Any]], Callable[..., Any]]


def mark(replacement: F, original: Callable[..., Any]) -> F:
    """``replacement`` marked for :func:`is_replacement`, with the name, docstring, ``__wrapped__``
    and parameters of ``original``.

    Libraries read a method's parameters from its code object (SQLAlchemy's
    ``inspect_getfullargspec``, used by its own tests, does), not from ``__wrapped__``: a
    replacement whose parameters differ is put behind a forwarder with exactly the original's.
    """
    if inspect.isfunction(original) and _parameters(replacement) != _parameters(original):
        replacement = _forwarder(original, replacement)  # type: ignore[assignment]
    functools.update_wrapper(replacement, original)
    replacement._poolwatch = True  # type: ignore[attr-defined]
    return replacement


def _parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    signature = inspect.signature(function, follow_wrapped=False)
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def _forwarder(original: Callable[..., Any], target: Callable[..., Any]) -> Callable[..., Any]:
    """A function with ``original``'s parameters (names, kinds, defaults) that calls ``target``."""
    kinds = inspect.Parameter
    declared: list[str] = []
    passed: list[str] = []
    star = False
    parameters = inspect.signature(original, follow_wrapped=False).parameters.values()
    for parameter in parameters:
        name, kind = parameter.name, parameter.kind
        if kind is kinds.VAR_POSITIONAL:
            declared.append(f"*{name}")
            passed.append(f"*{name}")
            star = True
        elif kind is kinds.KEYWORD_ONLY:
            if not star:
                declared.append("*")
                star = True
            declared.append(name)
            passed.append(f"{name}={name}")
        elif kind is kinds.VAR_KEYWORD:
            declared.append(f"**{name}")
            passed.append(f"**{name}")
        else:
            declared.append(name)
            passed.append(name)
            if kind is kinds.POSITIONAL_ONLY and parameter is _last_positional_only(parameters):
                declared.append("/")
    asynchronous = inspect.iscoroutinefunction(original)
    name = original.__name__ if original.__name__.isidentifier() else "forwarder"
    source = (
        f"{'async ' if asynchronous else ''}def {name}({', '.join(declared)}):\n"
        f"    return {'await ' if asynchronous else ''}_target({', '.join(passed)})\n"
    )
    namespace: dict[str, Any] = {"_target": target}
    # the source is made from the original's parameter names only
    exec(compile(source, f"<poolwatch forwarder of {original.__qualname__}>", "exec"), namespace)
    forwarder: Callable[..., Any] = namespace[name]
    forwarder.__defaults__ = original.__defaults__
    forwarder.__kwdefaults__ = original.__kwdefaults__
    return forwarder


def _last_positional_only(parameters: Any) -> inspect.Parameter | None:
    found = [p for p in parameters if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    return found[-1] if found else None


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
