"""Building the OTel SDK's metrics data model (`MetricsData`) outside the SDK.

otel-kit's fast instruments and the multi-process view produce cumulative points the SDK never
saw; exporters take them as ordinary SDK data built here, so every exporter treats them alike.
A process forked without exec subtracts what it inherited (`Baseline`) on the same model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = [
    "AttributesKey",
    "Baseline",
    "attributes_key",
    "histogram_metric",
    "histogram_point",
    "metrics_data",
    "number_metric",
    "number_point",
    "with_scope",
]

_CUMULATIVE = AggregationTemporality.CUMULATIVE
Attributes = Mapping[str, Any]
AttributesKey = tuple[tuple[str, Any], ...]
_Point = NumberDataPoint | HistogramDataPoint
_PointKey = tuple[str, str, AttributesKey]  # scope name, metric name, attribute set


def histogram_point(
    attributes: Attributes,
    start: int,
    now: int,
    *,
    bounds: Sequence[float],
    counts: Sequence[int],
    total: float,
    low: float,
    high: float,
    exemplars: Sequence[Exemplar] = (),
) -> HistogramDataPoint:
    """A cumulative explicit-bucket point; `counts` has one more entry than `bounds`.
    `exemplars`: at most one per bucket (otel-kit's, and the SDK's aligned reservoir)."""
    return HistogramDataPoint(
        attributes=attributes,
        start_time_unix_nano=start,
        time_unix_nano=now,
        count=sum(counts),
        sum=total,
        bucket_counts=list(counts),
        explicit_bounds=bounds,
        min=low,
        max=high,
        exemplars=list(exemplars),
    )


def number_point(attributes: Attributes, start: int, now: int, value: float) -> NumberDataPoint:
    return NumberDataPoint(
        attributes=attributes, start_time_unix_nano=start, time_unix_nano=now, value=value
    )


def histogram_metric(
    name: str, description: str, unit: str, points: Sequence[HistogramDataPoint]
) -> Metric:
    return Metric(
        name=name,
        description=description,
        unit=unit,
        data=Histogram(data_points=points, aggregation_temporality=_CUMULATIVE),
    )


def number_metric(
    name: str, description: str, unit: str, points: Sequence[NumberDataPoint], kind: str
) -> Metric:
    """kind: "counter" (monotonic sum), "updown" (non-monotonic sum) or "gauge"."""
    data: Sum | Gauge
    if kind == "gauge":
        data = Gauge(data_points=points)
    else:
        data = Sum(
            data_points=points,
            aggregation_temporality=_CUMULATIVE,
            is_monotonic=kind == "counter",
        )
    return Metric(name=name, description=description, unit=unit, data=data)


def metrics_data(
    resource: Resource, scope: InstrumentationScope, metrics: Sequence[Metric]
) -> MetricsData:
    """One resource with one scope."""
    scope_metrics = ScopeMetrics(scope=scope, metrics=list(metrics), schema_url="")
    return MetricsData(
        resource_metrics=[
            ResourceMetrics(resource=resource, scope_metrics=[scope_metrics], schema_url="")
        ]
    )


def with_scope(
    data: MetricsData | None,
    resource: Resource,
    scope: InstrumentationScope,
    metrics: Sequence[Metric],
) -> MetricsData:
    """`data` (None: nothing collected) with one more scope, added to its first resource."""
    if not metrics:
        return MetricsData(resource_metrics=list(data.resource_metrics) if data else [])
    if data is None or not data.resource_metrics:
        return metrics_data(resource, scope, metrics)
    first, *rest = data.resource_metrics
    added = ScopeMetrics(scope=scope, metrics=list(metrics), schema_url="")
    merged = ResourceMetrics(
        resource=first.resource,
        scope_metrics=[*first.scope_metrics, added],
        schema_url=first.schema_url,
    )
    return MetricsData(resource_metrics=[merged, *rest])


def attributes_key(attributes: Attributes | None) -> AttributesKey:
    """An attribute set as a hashable, order-independent key (sequence values as tuples)."""
    if not attributes:
        return ()
    return tuple(
        sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in attributes.items())
    )


def _counting_points(metric: Metric) -> Sequence[_Point]:
    """The points of a counter (monotonic sum) or histogram; () for states (up-down counters,
    gauges) and for exponential histograms."""
    data = metric.data
    if isinstance(data, Histogram) or (isinstance(data, Sum) and data.is_monotonic):
        return data.data_points
    return ()


class Baseline:
    """What a process forked without exec inherited: its counters and histograms at the fork.

    `subtract()` turns what the process reports afterwards into its own counts, from the fork,
    point by point (scope, metric name, attribute set):

    - a counter's value and each histogram bucket's count minus the inherited ones, never below
      0 (a cumulative count is never negative; a series that restarted below its inherited value,
      such as an observable counter of the process itself, shows 0 until it passes it);
    - a histogram's count is the sum of its buckets, its sum the difference of the sums, its min
      and max stay (they cannot be subtracted); a histogram whose bounds changed stays whole;
    - every counter and histogram point starts at the fork at the earliest (OTLP consumers see a
      new stream), inherited or not;
    - up-down counters and gauges are states the child holds too, not counts: unchanged.

    `Baseline()` (no fork) subtracts nothing and leaves the data as it is.
    """

    def __init__(self, inherited: Mapping[_PointKey, _Point] | None = None, since_ns: int = 0):
        self._inherited = dict(inherited or {})
        self._since_ns = since_ns

    @classmethod
    def of(cls, data: MetricsData, since_ns: int) -> Baseline:
        """The counters and histograms of `data` (read at the fork, `since_ns` its time)."""
        inherited = {
            (scope.scope.name, metric.name, attributes_key(point.attributes)): point
            for resource_metrics in data.resource_metrics
            for scope in resource_metrics.scope_metrics
            for metric in scope.metrics
            for point in _counting_points(metric)
        }
        return cls(inherited, since_ns)

    def subtract(self, data: MetricsData) -> MetricsData:
        """`data` with its counters and histograms counted from the fork (see the class)."""
        if not self._since_ns:
            return data
        return replace(
            data,
            resource_metrics=[
                replace(
                    resource_metrics,
                    scope_metrics=[
                        replace(
                            scope,
                            metrics=[self._metric(scope.scope.name, m) for m in scope.metrics],
                        )
                        for scope in resource_metrics.scope_metrics
                    ],
                )
                for resource_metrics in data.resource_metrics
            ],
        )

    def _metric(self, scope: str, metric: Metric) -> Metric:
        counting = _counting_points(metric)
        if not counting:
            return metric
        points = [
            self._point(
                point, self._inherited.get((scope, metric.name, attributes_key(point.attributes)))
            )
            for point in counting
        ]
        data: Any = metric.data  # a Sum or a Histogram: their points, of their own type
        return replace(metric, data=replace(data, data_points=points))

    def _point(self, point: _Point, inherited: _Point | None) -> _Point:
        point = replace(point, start_time_unix_nano=max(self._since_ns, point.start_time_unix_nano))
        if isinstance(point, NumberDataPoint) and isinstance(inherited, NumberDataPoint):
            return replace(point, value=max(point.value - inherited.value, 0))
        if (
            isinstance(point, HistogramDataPoint)
            and isinstance(inherited, HistogramDataPoint)
            and inherited.explicit_bounds == point.explicit_bounds
        ):
            buckets = [
                max(now - then, 0)
                for now, then in zip(point.bucket_counts, inherited.bucket_counts, strict=True)
            ]
            return replace(
                point, count=sum(buckets), sum=point.sum - inherited.sum, bucket_counts=buckets
            )
        return point
