"""Building the OTel SDK's metrics data model (`MetricsData`) outside the SDK.

otel-kit's fast instruments and the multi-process view produce cumulative points the SDK never
saw; exporters take them as ordinary SDK data built here, so every exporter treats them alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
    "histogram_metric",
    "histogram_point",
    "metrics_data",
    "number_metric",
    "number_point",
    "with_scope",
]

_CUMULATIVE = AggregationTemporality.CUMULATIVE
Attributes = Mapping[str, Any]


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
) -> HistogramDataPoint:
    """A cumulative explicit-bucket point; `counts` has one more entry than `bounds`."""
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
