"""Exporters: `prometheus` (direct pull), the push readers (`otlp`, `console`), the metrics
port (`server`, `auth`) and the shared view of several processes (`multiprocess`)."""

from __future__ import annotations

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import _Gauge as Gauge

__all__ = ["INSTRUMENT_CLASSES", "cardinality_limits"]

# The SDK's instrument classes, for the per-class settings every reader takes.
INSTRUMENT_CLASSES: tuple[type, ...] = (
    Counter,
    UpDownCounter,
    Histogram,
    Gauge,
    ObservableCounter,
    ObservableUpDownCounter,
    ObservableGauge,
)


def cardinality_limits(limit: int) -> dict[type, int]:
    """The SDK sets cardinality limits per reader: every reader otel-kit builds takes these."""
    return dict.fromkeys(INSTRUMENT_CLASSES, limit)
