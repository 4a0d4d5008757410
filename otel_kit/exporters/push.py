"""Push export (`otlp` to a Collector, `console`): a periodic reader whose exporter also
carries otel-kit's fast instruments."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from otel_kit._fast import FastMetrics
from otel_kit.config import ConfigError, Settings

__all__ = ["push_reader"]


class _WithFastMetrics(MetricExporter):
    def __init__(self, inner: MetricExporter, fast: FastMetrics, resource: Resource) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._fast = fast
        self._resource = resource

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        merged = self._fast.merge(metrics_data, self._resource)
        return self._inner.export(merged, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def _otlp_exporter() -> MetricExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError:
        raise ConfigError(
            "invalid setting OTEL_METRICS_EXPORTER = 'otlp': the OTLP exporter is not installed; "
            "pip install 'otel-kit[otlp]'"
        ) from None
    return OTLPMetricExporter()


def push_reader(
    name: str, settings: Settings, fast: FastMetrics, resource: Resource
) -> PeriodicExportingMetricReader:
    inner = _otlp_exporter() if name == "otlp" else ConsoleMetricExporter()
    return PeriodicExportingMetricReader(
        _WithFastMetrics(inner, fast, resource),
        export_interval_millis=settings.export_interval_ms,
    )
