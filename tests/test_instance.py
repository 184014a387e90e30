"""Every process that exports poolwatch metrics does so under its own ``service.instance.id``."""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from poolwatch import _instance, _state
from poolwatch._instrumentors import instrumentation_for
from poolwatch.config import Config

SERVICE = {"service.name": "shop"}


@pytest.fixture
def reader() -> InMemoryMetricReader:
    """An in-memory reader for one provider."""
    return InMemoryMetricReader()


def provider_with(reader: InMemoryMetricReader, **attributes: str) -> Iterator[MeterProvider]:
    """An SDK provider whose resource has exactly ``attributes`` (no detectors run)."""
    provider = MeterProvider(metric_readers=[reader], resource=Resource({**SERVICE, **attributes}))
    yield provider
    provider.shutdown()


@pytest.fixture
def bare(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    """A provider whose resource has no service.instance.id, as SDK 1.35-1.42 build them."""
    yield from provider_with(reader)


def exported_id(provider: MeterProvider, reader: InMemoryMetricReader) -> Any:
    """The service.instance.id of the resource a collection exports with (one point is added)."""
    provider.get_meter("test").create_counter("test.points").add(1)
    data = reader.get_metrics_data()
    assert data is not None and data.resource_metrics
    return data.resource_metrics[0].resource.attributes.get(_instance.SERVICE_INSTANCE_ID)


def test_a_missing_id_is_assigned_and_exported(
    bare: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Instrumenting through a provider without an id gives it a random UUID, which is exported."""
    instrumentation_for(Config(), bare)

    assigned = _instance.instance_id(bare)

    assert assigned is not None
    assert str(uuid.UUID(assigned)) == assigned
    assert exported_id(bare, reader) == assigned


def test_a_configured_id_is_kept(reader: InMemoryMetricReader) -> None:
    """An id the user configured is exported unchanged."""
    for provider in provider_with(reader, **{_instance.SERVICE_INSTANCE_ID: "pod-7"}):
        instrumentation_for(Config(), provider)
        assert exported_id(provider, reader) == "pod-7"


def test_an_id_equal_to_the_host_name_is_warned_about(
    reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    """An id equal to the host name is shared by every worker on the host: a warning names it."""
    host = socket.gethostname()
    _state.warned.discard("instance:" + f"shared:{host}")
    for provider in provider_with(reader, **{_instance.SERVICE_INSTANCE_ID: host}):
        with caplog.at_level(logging.WARNING, logger="poolwatch"):
            instrumentation_for(Config(), provider)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"service.instance.id={host!r} equals the host name" in warnings[0]


def test_a_provider_that_is_not_the_sdks_is_left_alone() -> None:
    """The API's no-op provider has no resource: nothing is assigned and nothing raises."""
    from opentelemetry.metrics import NoOpMeterProvider

    assert _instance.ensure_instance_id(NoOpMeterProvider()) is None


def test_the_private_sdk_attributes_are_declared_and_present(bare: MeterProvider) -> None:
    """Every private SDK attribute poolwatch touches is in PRIVATE_HOOKS and exists."""
    from opentelemetry.sdk import resources

    attributes = {hook.attribute for hook in _instance.PRIVATE_HOOKS}
    assert attributes == {"_sdk_config", "resource", "_service_instance_id"}
    assert hasattr(bare, "_sdk_config")
    assert hasattr(bare._sdk_config, "resource")
    drawn = hasattr(resources, "_service_instance_id")
    assert drawn == (_instance.sdk_version() >= _instance.SDK_DRAWS_FROM)


def test_a_missing_private_attribute_is_loud(
    bare: MeterProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Without ``MeterProvider._sdk_config`` poolwatch warns and counts an internal error."""
    from poolwatch import _guard

    saved = bare._sdk_config
    _state.warned.discard("instance:" + "hooks")
    del bare._sdk_config
    try:
        with caplog.at_level(logging.WARNING, logger="poolwatch"):
            assert _instance.ensure_instance_id(bare) is None
    finally:
        bare._sdk_config = saved
    assert "has no _sdk_config.resource" in caplog.text
    assert _guard.error_counts() == {"instance.hooks": 1}


def _in_child(provider: MeterProvider) -> dict[str, Any]:
    """Fork; the child reports its provider's id and poolwatch's warnings, then exits."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.close(read)
            records: list[str] = []
            handler = logging.Handler()
            handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
            logging.getLogger("poolwatch").addHandler(handler)
            _instance.ensure_instance_id(provider)
            report = {"id": _instance.instance_id(provider), "warnings": records}
            os.write(write, json.dumps(report).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        body = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, body
    result: dict[str, Any] = json.loads(body)
    return result


def test_a_forked_child_gets_a_fresh_id(bare: MeterProvider) -> None:
    """Pre-fork workers: the child of a process poolwatch gave an id exports under a new one."""
    instrumentation_for(Config(), bare)
    parent = _instance.instance_id(bare)

    first, second = _in_child(bare), _in_child(bare)

    assert len({parent, first["id"], second["id"]}) == 3
    assert _instance.instance_id(bare) == parent
    assert first["warnings"] == []


def test_a_configured_id_inherited_across_fork_is_warned_about(
    reader: InMemoryMetricReader,
) -> None:
    """A configured id the SDK does not renew is kept in the child, with a warning naming it."""
    for provider in provider_with(reader, **{_instance.SERVICE_INSTANCE_ID: "web-1"}):
        instrumentation_for(Config(), provider)
        _state.warned.discard("instance:" + "shared:web-1")
        child = _in_child(provider)
    if child["id"] != "web-1":
        # SDK 1.44 and later draw a new id in every forked child themselves.
        assert child["warnings"] == []
        return
    assert len(child["warnings"]) == 1
    assert "service.instance.id='web-1' was inherited across fork()" in child["warnings"][0]


def test_a_provider_reconfigured_after_instrumenting_gets_an_id_at_collection(
    bare: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """The id is checked at every collection too, so a resource replaced later still gets one."""
    instrumentation_for(Config(), bare)
    bare._sdk_config.resource = Resource(SERVICE)

    exported = exported_id(bare, reader)

    assert exported is not None
    assert exported == _instance.instance_id(bare)
