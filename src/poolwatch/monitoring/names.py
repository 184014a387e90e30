"""OpenTelemetry to Prometheus names: the one translation every query and test relies on.

Follows what the collector's ``prometheus`` and ``prometheusremotewrite`` exporters do with their
default ``UnderscoreEscapingWithSuffixes`` strategy (checked against the real collector in
``tests/monitoring/test_names.py``): name tokens joined by ``_``, the unit appended as a word
unless the name already holds it (units in braces are dropped), ``_total`` for monotonic
counters, and ``_bucket``/``_sum``/``_count`` series for histograms.
"""

from __future__ import annotations

import re
from typing import Final

from poolwatch import catalog

#: Resource attributes the exporters turn into target labels (``service.name`` -> ``job``).
SERVICE_LABEL: Final = "job"
INSTANCE_LABEL: Final = "instance"

_UNIT_WORDS: Final = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "min": "minutes",
    "h": "hours",
    "d": "days",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "%": "percent",
}
_PER_UNIT_WORDS: Final = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9:]+")
_NOT_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")


def _tokens(text: str) -> list[str]:
    return [token for token in _NOT_NAME_CHAR.split(text) if token]


def _unit_words(unit: str) -> list[str]:
    """``s`` -> ``[seconds]``; ``By/s`` -> ``[bytes, per, second]``; ``{connection}`` -> ``[]``."""
    unit = re.sub(r"\{[^}]*\}", "", unit).strip()
    if not unit or unit == "1":
        return []
    main, _, per = unit.partition("/")
    words = _tokens(_UNIT_WORDS.get(main, main))
    if per:
        words += ["per", *_tokens(_PER_UNIT_WORDS.get(per, per))]
    return words


def prometheus_name(metric: catalog.Metric) -> str:
    """The metric's name in Prometheus (a histogram's base name, before ``_bucket`` etc.)."""
    tokens = _tokens(metric.name)
    for word in _unit_words(metric.unit):
        if word not in tokens:
            tokens.append(word)
    if metric.kind is catalog.Kind.COUNTER:
        tokens = [token for token in tokens if token != "total"] + ["total"]
    elif metric.unit == "1" and metric.kind is catalog.Kind.UP_DOWN_COUNTER:
        tokens = [token for token in tokens if token != "ratio"] + ["ratio"]
    name = "_".join(tokens)
    return "_" + name if name[:1].isdigit() else name


def prometheus_series(metric: catalog.Metric) -> tuple[str, ...]:
    """Every series name the metric becomes: three for a histogram, one otherwise."""
    base = prometheus_name(metric)
    if metric.kind is catalog.Kind.HISTOGRAM:
        return (base + "_bucket", base + "_count", base + "_sum")
    return (base,)


def prometheus_label(attribute: str) -> str:
    """An attribute's label name: ``db.client.connection.pool.name`` -> ``..._pool_name``."""
    label = _NOT_LABEL_CHAR.sub("_", attribute)
    return "key_" + label if label[:1].isdigit() else label


def all_metrics() -> tuple[catalog.Metric, ...]:
    """Every metric the catalog names (poolwatch's own, the standard ones, the PostgreSQL ones)."""
    found = {value for value in vars(catalog).values() if isinstance(value, catalog.Metric)}
    return tuple(sorted(found, key=lambda metric: metric.name))


def exported_series() -> frozenset[str]:
    """Every Prometheus series name poolwatch and its collector configs can produce."""
    return frozenset(name for metric in all_metrics() for name in prometheus_series(metric))
