"""The snapshot: every metric of one process (or of several, merged) as plain values.

A snapshot maps metrics (the meter's scope and the metric's name: scope labels and same-name
metrics of several meters stay as in one process) to `MetricPoints`, one metric's points by
attribute set. It is
what a process writes to `<token>.json`, what the archive holds for ended processes, and what a
scrape merges before handing SDK data (`to_metrics_data`) to the Prometheus translation.

Merge rules, per OTel instrument kind: counters and histograms add up over live and ended
processes; up-down counters add up and gauges take the largest value, over live ones only (an
ended process's state ended with it).

Histogram exemplars: `HistogramPoint.exemplars` maps a bucket index to its exemplar (value,
time_ns, trace_id, span_id); the newest per bucket wins across processes. In the file, a
histogram point has a 7th element then: [[index, value, time_ns, trace_id hex, span_id hex],
...]. Exemplars of counters and exemplars' filtered attributes are not carried.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from time import time_ns
from typing import Any

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_kit import catalogue
from otel_kit._otel_data import (
    AttributesKey,
    attributes_key,
    histogram_metric,
    histogram_point,
    number_metric,
    number_point,
)
from otel_kit._support import LogOnce

__all__ = [
    "OVERFLOW",
    "HistogramPoint",
    "MetricKey",
    "MetricPoints",
    "ScopeKey",
    "Snapshot",
    "decode",
    "encode",
    "merge_into",
    "per_worker",
    "snapshot_of",
    "to_metrics_data",
]

_FORMAT = 2  # 2: metrics keyed by scope and name
_CUMULATIVE_KINDS = ("counter", "histogram")
_KINDS = ("counter", "updown", "gauge", "histogram")
_ATTRIBUTE_TYPES = (str, bool, int, float)
# The SDK's point for attribute sets past the cardinality limit.
OVERFLOW: AttributesKey = (("otel.metric.overflow", True),)
_warn_once = LogOnce().warning
SnapshotExemplar = tuple[float, int, int, int]  # value, time_ns, trace_id, span_id (0: none)


@dataclass
class HistogramPoint:
    bounds: tuple[float, ...]
    counts: list[int]
    sum: float
    min: float
    max: float
    exemplars: dict[int, SnapshotExemplar] = field(default_factory=dict)  # by bucket index

    def copy(self) -> HistogramPoint:
        return HistogramPoint(
            self.bounds, list(self.counts), self.sum, self.min, self.max, dict(self.exemplars)
        )


def _newest(
    old: dict[int, SnapshotExemplar], new: dict[int, SnapshotExemplar]
) -> dict[int, SnapshotExemplar]:
    """Per bucket, the newer exemplar of the two."""
    merged = dict(old)
    for index, exemplar in new.items():
        kept = merged.get(index)
        if kept is None or exemplar[1] > kept[1]:
            merged[index] = exemplar
    return merged


def _snapshot_exemplars(
    exemplars: Iterable[Exemplar], bounds: tuple[float, ...]
) -> dict[int, SnapshotExemplar]:
    """A point's exemplars by bucket, the newest of each."""
    out: dict[int, SnapshotExemplar] = {}
    for e in exemplars:
        index = bisect_left(bounds, e.value)
        kept = out.get(index)
        if kept is None or e.time_unix_nano > kept[1]:
            out[index] = (e.value, e.time_unix_nano, e.trace_id or 0, e.span_id or 0)
    return out


def _sdk_exemplars(exemplars: dict[int, SnapshotExemplar]) -> list[Exemplar]:
    return [
        Exemplar({}, value, when, span_id or None, trace_id or None)
        for value, when, trace_id, span_id in exemplars.values()
    ]


@dataclass
class MetricPoints:
    """One metric's points by attribute set. kind: counter, updown, gauge or histogram."""

    kind: str
    unit: str
    description: str
    points: dict[AttributesKey, Any]  # float, or HistogramPoint for histograms


ScopeKey = tuple[str, str, str, AttributesKey]  # a meter's name, version, schema URL, attributes
MetricKey = tuple[ScopeKey, str]  # the meter's scope, the metric's name
Snapshot = dict[MetricKey, MetricPoints]


def scope_key(scope: InstrumentationScope) -> ScopeKey:
    attributes = attributes_key(scope.attributes or {})
    return (scope.name, scope.version or "", scope.schema_url or "", attributes)


def _kind(data: Any) -> str | None:
    if isinstance(data, Histogram):
        return "histogram"
    if isinstance(data, Sum):
        return "counter" if data.is_monotonic else "updown"
    if isinstance(data, Gauge):
        return "gauge"
    return None  # exponential histograms: no Prometheus text form, not exported either


def _combine(kind: str, old: Any, new: Any) -> Any:
    if old is None:
        return new.copy() if kind == "histogram" else new
    if kind == "gauge":
        return max(old, new)
    if kind != "histogram":
        return old + new
    if old.bounds != new.bounds:
        _warn_once("otel-kit: histogram buckets differ between processes; kept the first")
        return old
    counts = [a + b for a, b in zip(old.counts, new.counts, strict=True)]
    return HistogramPoint(
        old.bounds,
        counts,
        old.sum + new.sum,
        min(old.min, new.min),
        max(old.max, new.max),
        _newest(old.exemplars, new.exemplars),
    )


def snapshot_of(data: MetricsData) -> Snapshot:
    """The metrics of one process (a reader's collection) as a snapshot."""
    out: Snapshot = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_key(scope_metrics.scope)
            for metric in scope_metrics.metrics:
                kind = _kind(metric.data)
                if kind is None:
                    continue
                into = out.get((scope, metric.name))
                if into is None:
                    into = MetricPoints(kind, metric.unit or "", metric.description or "", {})
                    out[(scope, metric.name)] = into
                elif into.kind != kind:
                    continue
                points = into.points
                data_points: Iterable[Any] = metric.data.data_points
                for point in data_points:
                    key = attributes_key(point.attributes)
                    if kind == "histogram":
                        bounds = tuple(point.explicit_bounds)
                        value: Any = HistogramPoint(
                            bounds,
                            list(point.bucket_counts),
                            point.sum,
                            point.min,
                            point.max,
                            _snapshot_exemplars(point.exemplars, bounds),
                        )
                    else:
                        value = point.value
                    kept = points.get(key)
                    points[key] = value if kept is None else _combine(kind, kept, value)
    return out


# The runtime metrics: each process's own (its memory, CPU, threads), kept apart per worker.
_PER_WORKER = frozenset(
    spec.name
    for spec in (
        catalogue.PROCESS_CPU_TIME,
        catalogue.PROCESS_MEMORY_USAGE,
        catalogue.PROCESS_MEMORY_VIRTUAL,
        catalogue.PROCESS_UNIX_FILE_DESCRIPTOR_COUNT,
        catalogue.PROCESS_THREAD_COUNT,
        catalogue.CPYTHON_GC_COLLECTIONS,
        catalogue.CPYTHON_GC_COLLECTED_OBJECTS,
        catalogue.CPYTHON_GC_UNCOLLECTABLE_OBJECTS,
    )
)


def per_worker(snapshot: Snapshot, worker: int) -> Snapshot:
    """`snapshot` with a `worker` attribute (the process's worker number, see
    `directory.claim_worker`) on its runtime metrics, so one leaking or busy worker shows
    among the others; the numbers are reused, so the series stay as many as the processes
    that run at once. Everything else merges over processes as before."""
    label = ("worker", str(worker))
    for (_, name), metric in snapshot.items():
        if name not in _PER_WORKER:
            continue
        metric.points = {tuple(sorted((*key, label))): v for key, v in metric.points.items()}
    return snapshot


def merge_into(total: Snapshot, part: Snapshot, *, live: bool, limit: int) -> None:
    """Add `part` (one process) to `total`. An ended process adds only counters and histograms:
    its gauges and up-down counters described a state that ended with it. Past `limit`
    attribute sets per metric (the cardinality limit, as in one process), new ones land in the
    `otel.metric.overflow` point: the merge of many processes, or of every recycled worker in
    the archive, stays as bounded as one process."""
    for metric_key, metric in part.items():
        if not live and metric.kind not in _CUMULATIVE_KINDS:
            continue
        into = total.get(metric_key)
        if into is None:
            into = MetricPoints(metric.kind, metric.unit, metric.description, {})
            total[metric_key] = into
        elif into.kind != metric.kind:
            name = metric_key[1]
            _warn_once(f"otel-kit: {name} is a {into.kind} and a {metric.kind}; kept the first")
            continue
        points = into.points
        for key, value in metric.points.items():
            if key not in points and len(points) - (OVERFLOW in points) >= limit:
                key = OVERFLOW
            points[key] = _combine(metric.kind, points.get(key), value)


def encode(snapshot: Snapshot, **extra: Any) -> bytes:
    metrics = []
    for (scope, name), metric in snapshot.items():
        if metric.kind == "histogram":
            points = [
                [key, p.bounds, p.counts, p.sum, p.min, p.max, *_encode_exemplars(p.exemplars)]
                for key, p in metric.points.items()
            ]
        else:
            points = [[key, value] for key, value in metric.points.items()]
        metrics.append([scope, name, metric.kind, metric.unit, metric.description, points])
    document = {"format": _FORMAT, **extra, "metrics": metrics}
    return json.dumps(document, separators=(",", ":")).encode()


def _encode_exemplars(exemplars: dict[int, SnapshotExemplar]) -> list[list[list[Any]]]:
    """[] without exemplars (the point keeps its 6 elements), else the point's 7th element."""
    if not exemplars:
        return []
    encoded = [
        [index, value, when, f"{trace_id:032x}", f"{span_id:016x}"]
        for index, (value, when, trace_id, span_id) in exemplars.items()
    ]
    return [encoded]


def _decode_exemplars(raw: Any, buckets: int) -> dict[int, SnapshotExemplar]:
    out: dict[int, SnapshotExemplar] = {}
    for index, value, when, trace_id, span_id in raw:
        if not isinstance(index, int) or not 0 <= index < buckets:
            raise ValueError("exemplar bucket out of range")
        if not isinstance(when, int) or isinstance(when, bool):
            raise TypeError("exemplar time is no integer")
        out[index] = (_number(value), when, int(_text(trace_id), 16), int(_text(span_id), 16))
    return out


# Validation looks at exact types: JSON gives exactly these (never a subclass, and bool is no
# int here), and checking a whole list's types at once (`issuperset(map(type, ...))`) keeps the
# scrape's decoding of every point of every process cheap.
_SCALARS = frozenset(_ATTRIBUTE_TYPES)
_NUMBERS = frozenset((int, float))
_INTEGERS = frozenset((int,))


def _decode_key(pairs: Any) -> AttributesKey:
    key = []
    for name, value in pairs:
        if type(name) is not str:
            raise TypeError(f"expected text, got {type(name).__name__}")
        if type(value) not in _SCALARS:
            if type(value) is not list:
                raise TypeError(f"attribute value {type(value).__name__}")
            if not _SCALARS.issuperset(map(type, value)):
                raise TypeError("attribute sequence of non-scalars")
            value = tuple(value)
        key.append((name, value))
    return tuple(key)


def _text(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _number(value: Any) -> float:
    if type(value) not in _NUMBERS:
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return value  # type: ignore[no-any-return]


def _bounds(raw: Any, seen: dict[tuple[Any, ...], tuple[float, ...]]) -> tuple[float, ...]:
    """Checked histogram bounds; one tuple per distinct list in a snapshot (`seen`: most
    points share their metric's bounds, checked once)."""
    bounds = tuple(raw)
    checked = seen.get(bounds)
    if checked is None:
        if not _NUMBERS.issuperset(map(type, bounds)):
            raise TypeError("histogram bounds are no numbers")
        if list(bounds) != sorted(bounds):
            raise ValueError("histogram bounds out of order")
        checked = seen[bounds] = bounds
    return checked


def _histogram(
    seen: dict[tuple[Any, ...], tuple[float, ...]],
    bounds: Any,
    counts: Any,
    total: Any,
    low: Any,
    high: Any,
    exemplars: Any = (),
) -> HistogramPoint:
    checked = _bounds(bounds, seen)
    if (
        type(counts) is not list
        or len(counts) != len(checked) + 1
        or not _INTEGERS.issuperset(map(type, counts))
        or min(counts) < 0
    ):
        raise ValueError("histogram counts do not match the bounds")
    return HistogramPoint(
        checked,
        counts,
        _number(total),
        _number(low),
        _number(high),
        {} if exemplars == () else _decode_exemplars(exemplars, len(counts)),
    )


def decode(data: bytes) -> tuple[Snapshot, dict[str, Any]]:
    """The snapshot and the document's other fields; ValueError if it is not a well-formed
    snapshot. Files are untrusted input (any process of the directory's owner writes them): a
    snapshot that decodes can be merged and rendered without error."""
    document = json.loads(data)
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise ValueError("not an otel-kit snapshot of this version")
    snapshot: Snapshot = {}
    seen: dict[tuple[Any, ...], tuple[float, ...]] = {}
    try:
        for raw_scope, name, kind, unit, description, raw_points in document.pop("metrics"):
            scope_name, version, schema_url, scope_attributes = raw_scope
            scope: ScopeKey = (
                _text(scope_name),
                _text(version),
                _text(schema_url),
                _decode_key(scope_attributes),
            )
            if kind not in _KINDS:
                raise ValueError(f"unknown kind {kind!r}")
            points: dict[AttributesKey, Any] = {}
            if kind == "histogram":
                for key, *histogram in raw_points:
                    points[_decode_key(key)] = _histogram(seen, *histogram)
            else:
                for key, value in raw_points:
                    points[_decode_key(key)] = _number(value)
            snapshot[(scope, _text(name))] = MetricPoints(
                kind, _text(unit), _text(description), points
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed otel-kit snapshot: {exc}") from None
    return snapshot, document


def to_metrics_data(snapshot: Snapshot, resource: Resource) -> MetricsData:
    """A merged snapshot as SDK data, for the same Prometheus translation as one process."""
    now = time_ns()
    scopes: dict[ScopeKey, list[Metric]] = {}
    for (scope, name), metric in snapshot.items():
        metrics = scopes.setdefault(scope, [])
        if metric.kind == "histogram":
            histograms = [
                histogram_point(
                    dict(key),
                    now,
                    now,
                    bounds=p.bounds,
                    counts=p.counts,
                    total=p.sum,
                    low=p.min,
                    high=p.max,
                    exemplars=_sdk_exemplars(p.exemplars),
                )
                for key, p in metric.points.items()
            ]
            metrics.append(histogram_metric(name, metric.description, metric.unit, histograms))
        else:
            numbers = [number_point(dict(key), now, now, v) for key, v in metric.points.items()]
            metrics.append(
                number_metric(name, metric.description, metric.unit, numbers, metric.kind)
            )
    scope_metrics = [
        ScopeMetrics(
            scope=InstrumentationScope(name, version or None, schema_url or None, dict(attributes)),
            metrics=metrics,
            schema_url=schema_url,
        )
        for (name, version, schema_url, attributes), metrics in scopes.items()
    ]
    return MetricsData(
        resource_metrics=[
            ResourceMetrics(resource=resource, scope_metrics=scope_metrics, schema_url="")
        ]
    )
