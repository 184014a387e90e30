"""Compatibility tables: every private attribute of a library that an adapter relies on.

Each adapter declares its :class:`Hook` entries once, with the feature that needs each and what
breaks without it, and checks them when instrumenting. A missing hook is loud once per process
(a warning naming the library, its version and the hook; a count in ``poolwatch.internal.errors``
under ``compat.<library>``) and switches off only the feature that needs it.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from poolwatch import _guard


@dataclass(frozen=True)
class Hook:
    """One private attribute of a library's class that poolwatch uses."""

    module: str
    cls: str
    attribute: str
    #: The poolwatch feature that needs it (switched off without it).
    feature: str
    #: What breaks (or degrades) without it, in words.
    without: str
    #: Set on instances (declared by ``__slots__`` or an annotation) rather than on the class.
    instance: bool = False

    @property
    def name(self) -> str:
        return f"{self.cls}.{self.attribute}"

    def owner(self) -> type | None:
        """The class, if its module is imported and still defines it."""
        module = sys.modules.get(self.module)
        found = getattr(module, self.cls, None) if module is not None else None
        return found if isinstance(found, type) else None

    def present(self) -> bool:
        """Whether the library still has it."""
        owner = self.owner()
        if owner is None:
            return False
        return any(
            self.attribute in vars(cls)  # a method, or a slot's descriptor
            or (self.instance and self.attribute in vars(cls).get("__annotations__", {}))
            for cls in owner.__mro__
        )


class Table:
    """One library's hooks, and the features switched off by those it lacks."""

    def __init__(self, library: str, distribution: str, hooks: Iterable[Hook]) -> None:
        self.library = library
        self.distribution = distribution
        self.hooks = tuple(hooks)
        self._missing: frozenset[Hook] = frozenset()

    def check(self, module: str | None = None) -> list[Hook]:
        """Check the hooks (of ``module`` only, if given) now; each missing one is reported once
        per process."""
        checked = [hook for hook in self.hooks if module is None or hook.module == module]
        missing = [hook for hook in checked if not hook.present()]
        self._missing = (self._missing - set(checked)) | set(missing)
        for hook in missing:
            self._report(hook)
        return missing

    def off(self, feature: str) -> bool:
        """Whether ``feature`` is switched off because a hook it needs was missing."""
        return any(hook.feature == feature for hook in self._missing)

    def has(self, hook: Hook) -> bool:
        """Whether ``hook`` was present when last checked."""
        return hook not in self._missing

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "unknown version"

    def _report(self, hook: Hook) -> None:
        key = f"compat.{self.library}"
        if _guard.warn_once(
            f"{key}:{hook.module}.{hook.name}",
            "poolwatch: %s %s has no %s.%s; poolwatch's %s is off: %s",
            self.library,
            self.version(),
            hook.module,
            hook.name,
            hook.feature,
            hook.without,
        ):
            _guard.count(key)
