"""Simulating a library release without one of the private attributes poolwatch uses."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging

import pytest

from poolwatch import _guard
from poolwatch._integrations._compat import Hook, Table


def remove(monkeypatch: pytest.MonkeyPatch, hook: Hook) -> None:
    """Make ``hook`` missing, as a release without it would."""
    importlib.import_module(hook.module)
    owner = hook.owner()
    assert owner is not None and hook.present()
    for cls in owner.__mro__:
        if hook.attribute in vars(cls):
            monkeypatch.delattr(cls, hook.attribute)
        if hook.attribute in vars(cls).get("__annotations__", {}):
            monkeypatch.delitem(cls.__annotations__, hook.attribute)
    assert not hook.present()


def assert_reported_once(table: Table, hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    """One warning naming the library, its version, the hook and what breaks; one count; the
    hook's feature off and every other feature on."""
    warnings = [record.getMessage() for record in caplog.records if record.name == "poolwatch"]
    version = importlib.metadata.version(table.distribution)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        f"poolwatch: {table.library} {version} has no {hook.module}.{hook.name}"
    )
    assert hook.without in warnings[0]
    assert _guard.error_counts() == {f"compat.{table.library}": 1}
    assert table.off(hook.feature)
    others = {other.feature for other in table.hooks} - {hook.feature}
    assert not any(table.off(feature) for feature in others)


__all__ = ["assert_reported_once", "logging", "remove"]
