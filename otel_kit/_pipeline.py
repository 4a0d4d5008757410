"""The Resource and the MeterProvider (views for bucket boundaries, cardinality limits)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import _Gauge as Gauge
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from otel_kit.config import Settings

__all__ = ["DURATION_HISTOGRAMS", "build_provider", "build_resource", "cardinality_limits"]

# Second-based histograms recorded through the SDK (contrib instrumentors, users); they get the
# configured duration buckets. otel-kit's own HTTP server histogram uses them directly.
DURATION_HISTOGRAMS = (
    "http.server.request.duration",
    "http.client.request.duration",
    "db.client.operation.duration",
    "db.client.connection.wait_time",
    "db.client.connection.create_time",
    "db.client.connection.use_time",
)


def cardinality_limits(limit: int) -> dict[type, int]:
    """The SDK sets cardinality limits per reader: every reader otel-kit builds takes these."""
    classes = (
        Counter,
        UpDownCounter,
        Histogram,
        Gauge,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    )
    return dict.fromkeys(classes, limit)


def build_resource(settings: Settings) -> Resource:
    """service.name/version, deployment.environment and a fresh service.instance.id.

    Explicit settings win over OTEL_RESOURCE_ATTRIBUTES, which wins over defaults.
    """
    attributes: dict[str, str] = {"service.instance.id": str(uuid.uuid4())}
    attributes.update(settings.resource_attributes)
    attributes.setdefault("service.name", "unknown_service")
    for key, value in (
        ("service.name", settings.service_name),
        ("service.version", settings.service_version),
        ("deployment.environment", settings.deployment_environment),
    ):
        if value is not None:
            attributes[key] = value
    return Resource.create(attributes)


def build_provider(
    settings: Settings, resource: Resource, readers: Sequence[MetricReader]
) -> MeterProvider:
    buckets = ExplicitBucketHistogramAggregation(boundaries=settings.duration_buckets)
    views = [View(instrument_name=name, aggregation=buckets) for name in DURATION_HISTOGRAMS]
    return MeterProvider(metric_readers=list(readers), resource=resource, views=views)
