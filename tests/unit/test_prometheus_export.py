"""OTel data -> Prometheus exposition: names, units, types, and no crash on what it cannot show."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import Histogram
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from starlette.applications import Starlette

from otel_kit import setup_metrics
from otel_kit.catalogue import prometheus_label, prometheus_name
from tests.exposition import series, value
from tests.handles import MakeHandle


@pytest.mark.parametrize(
    ("name", "unit", "monotonic", "expected"),
    [
        ("http.server.request.duration", "s", False, "http_server_request_duration_seconds"),
        ("http.server.active_requests", "{request}", False, "http_server_active_requests"),
        ("cache.requests", "{request}", True, "cache_requests_total"),
        ("http.server.request.body.size", "By", False, "http_server_request_body_size_bytes"),
        ("jobs.done_total", "", True, "jobs_done_total"),
        ("cpu.utilization", "1", False, "cpu_utilization_ratio"),
        ("9lives", "", False, "_9lives"),
    ],
)
def test_prometheus_names(name: str, unit: str, monotonic: bool, expected: str) -> None:
    assert prometheus_name(name, unit, monotonic_sum=monotonic) == expected


def test_label_names() -> None:
    assert prometheus_label("http.response.status_code") == "http_response_status_code"
    assert prometheus_label("1st") == "key_1st"


@pytest.mark.usefixtures("global_metrics")
def test_types_and_label_values() -> None:
    handle = setup_metrics(Starlette())  # served on an app nothing calls: no metrics port
    meter = metrics.get_meter("t")
    meter.create_counter("events", unit="{event}").add(3, {"ok": True, "tags": ("a", "b")})
    meter.create_up_down_counter("queue.depth").add(-2)
    text = handle.render().decode()
    assert "# TYPE events_total counter" in text
    assert value(text, "events_total", ok="true", tags="[a,b]") == 3
    assert "# TYPE queue_depth gauge" in text
    assert value(text, "queue_depth") == -2


def test_exponential_histograms_are_skipped_with_a_warning(
    make_handle: MakeHandle, caplog: pytest.LogCaptureFixture
) -> None:
    handle = make_handle()
    # A user-built view on the same provider type: the contrib reader crashes on this.
    provider = handle.meter_provider
    provider._sdk_config.views = (  # type: ignore[attr-defined]
        View(instrument_type=Histogram, aggregation=ExponentialBucketHistogramAggregation()),
    )
    meter = provider.get_meter("exp")
    meter.create_histogram("latency.exp", unit="s").record(0.2)
    meter.create_counter("still.here").add(1)
    with caplog.at_level(logging.WARNING, logger="otel_kit"):
        text = handle.render().decode()
    assert "latency_exp" not in text
    assert value(text, "still_here_total") == 1
    assert any("latency.exp" in r.message for r in caplog.records)
    assert series(text, "target_info")
