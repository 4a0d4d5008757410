"""User metrics through the OTel API on otel-kit's fast instruments (`otel_kit/_user_meter.py`,
issue 22) export what the plain SDK exports for the same measurements: the Prometheus
exposition (names, units, scope labels, values, buckets, overflow, exemplars), the OTLP wire
content (a real receiver on loopback) and the multi-process merge.

The plain SDK path is the SDK meter of the same kind of setup (`SDKMeterProvider.get_meter` on
otel-kit's provider: its views, readers and exemplar filter, without the routing)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.metrics import Meter, NoOpMeter, Observation
from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.metrics._internal.instrument import _Synchronous
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_generate
from prometheus_client.parser import text_string_to_metric_families

from otel_kit._exporters.multiprocess import Multiprocess
from otel_kit._exporters.prometheus import PullReader
from otel_kit._setup import MetricsHandle
from otel_kit._user_meter import (
    Instruments,
    MeterProvider,
    UserCounter,
    UserHistogram,
    UserUpDownCounter,
)
from tests.integration.otlp_receiver import OTLPReceiver, attributes

MakeHandle = Callable[..., MetricsHandle]
GetMeter = Callable[..., Meter]
LIMIT = 3  # cardinality_limit of every setup here


def sampled(trace_id: int, span_id: int) -> Any:
    """A context manager making a sampled span current, the same ids in every run."""
    span = NonRecordingSpan(SpanContext(trace_id, span_id, False, TraceFlags(1)))
    return trace.use_span(span)


def unsampled() -> Any:
    span = NonRecordingSpan(SpanContext(0xDEAD, 0xBEEF, False, TraceFlags(0)))
    return trace.use_span(span)


def record(get_meter: GetMeter) -> None:
    """One sequence of measurements, through meters from `get_meter(name, version, ...)`."""
    shop = get_meter("shop", "1.2", "https://opentelemetry.io/schemas/1.30.0", {"team": "a"})
    orders = shop.create_counter("shop.orders", unit="{order}", description="Orders placed")
    assert shop.create_counter("shop.orders", unit="{order}", description="Orders placed") is (
        orders
    )
    orders.add(1, {"method": "card"})
    orders.add(2, {"method": "card"})
    orders.add(-1, {"method": "card"})  # dropped, with the SDK's warning
    orders.add(float("inf"), {"method": "card"})  # dropped
    orders.add(1)  # no attributes: a series of its own
    with sampled(0x1111, 0x21):
        orders.add(5, {"method": "cash"})
    with unsampled():
        orders.add(1, {"method": "cash"})  # trace_based: no exemplar
    inflight = shop.create_up_down_counter("shop.inflight", description="In flight")
    inflight.add(3, {"queue": "a"})
    inflight.add(-5, {"queue": "a"})
    inflight.add(float("nan"), {"queue": "a"})  # dropped
    inflight.add(1, {"tags": ["x", "y"]})  # a sequence value: unhashable, cleaned to a tuple
    inflight.add(1, {"tags": ["x", "y"]})
    totals = shop.create_histogram("shop.total", unit="s", description="Order total")
    for value in (0.0, 3.0, 7.5, 12.0, 80.0, 20_000.0):
        totals.record(value, {"method": "card"})
    totals.record(-1.0, {"method": "card"})  # dropped
    with sampled(0x2222, 0x31):
        totals.record(4.0, {"method": "card"})
    with sampled(0x3333, 0x41):
        totals.record(2.0, {"method": "card"})  # the same bucket (0, 5]: the newest wins
        totals.record(600.0, {"method": "card"})
    sizes = shop.create_histogram(
        "shop.basket.size", unit="{item}", explicit_bucket_boundaries_advisory=[1, 2, 5]
    )
    for value in (1, 1, 3, 9):
        sizes.record(value)
    shop.create_observable_gauge("shop.queue.depth", [lambda _: [Observation(4.0)]])
    tenants = get_meter("tenants").create_counter("tenant.requests")
    for i in range(6):  # LIMIT attribute sets, then the overflow series
        tenants.add(1, {"tenant": f"t{i}"})
    tenants.add(1, {"tenant": "t0"})  # an admitted set keeps counting in its own series


def fast_meters(handle: MetricsHandle) -> GetMeter:
    return handle.meter_provider.get_meter


def sdk_meters_of(provider: SDKMeterProvider) -> GetMeter:
    """The SDK's own meters of otel-kit's provider: no routing."""
    return lambda *args: SDKMeterProvider.get_meter(provider, *args)


def sdk_meters(handle: MetricsHandle) -> GetMeter:
    return sdk_meters_of(handle.meter_provider)


Sample = tuple[str, tuple[tuple[str, str], ...], float, Any]


def exposition(text: str, *, openmetrics: bool = False) -> list[Sample]:
    """Every sample but target_info (a fresh instance id) and _created (times), with its
    exemplar (labels and value: its timestamp is the measurement's)."""
    found: list[Sample] = []
    parse = (
        openmetrics_parser.text_string_to_metric_families
        if openmetrics
        else (text_string_to_metric_families)
    )
    for family in parse(text):
        for s in family.samples:
            if s.name == "target_info" or s.name.endswith("_created"):
                continue
            exemplar = s.exemplar and (tuple(sorted(s.exemplar.labels.items())), s.exemplar.value)
            found.append((s.name, tuple(sorted(s.labels.items())), s.value, exemplar))
    return sorted(found, key=repr)


def setups(make_handle: MakeHandle, **settings: Any) -> Iterator[tuple[str, MetricsHandle]]:
    for name, meters in (("fast", fast_meters), ("sdk", sdk_meters)):
        handle = make_handle(
            disabled_instrumentations=("runtime",), cardinality_limit=LIMIT, **settings
        )
        record(meters(handle))
        yield name, handle


def test_the_exposition_is_the_sdks(make_handle: MakeHandle) -> None:
    texts, again = {}, {}
    for name, handle in setups(make_handle):
        texts[name] = {  # the first scrape: the SDK's reservoirs hold this period's exemplars
            "openmetrics": exposition(handle.render(openmetrics=True).decode(), openmetrics=True),
            "text": exposition(handle.render().decode()),
        }
        again[name] = exposition(handle.render(openmetrics=True).decode(), openmetrics=True)
    assert texts["fast"] == texts["sdk"]
    # the documented difference: the SDK starts each collection without exemplars, otel-kit
    # keeps the newest (as prometheus_client does)
    assert again["fast"] == texts["fast"]["openmetrics"]
    assert again["sdk"] == [(*s[:3], None) for s in texts["sdk"]["openmetrics"]]
    openmetrics = {s[0]: s for s in texts["fast"]["openmetrics"]}
    labels = dict(openmetrics["shop_orders_total"][1])
    assert labels["otel_scope_name"] == "shop"
    assert labels["otel_scope_version"] == "1.2"
    assert labels["otel_scope_schema_url"] == "https://opentelemetry.io/schemas/1.30.0"
    assert labels["otel_scope_team"] == "a"
    exemplars = {
        (dict(s[1]).get("le"), dict(s[1]).get("method")): dict(s[3][0])["trace_id"]
        for s in texts["fast"]["openmetrics"]
        if s[3]
    }
    assert exemplars == {
        (None, "cash"): f"{0x1111:032x}",
        ("5.0", "card"): f"{0x3333:032x}",
        ("750.0", "card"): f"{0x3333:032x}",
    }
    overflow = [s for s in texts["fast"]["text"] if ("otel_metric_overflow", "true") in s[1]]
    assert [(s[0], s[2]) for s in overflow] == [("tenant_requests_total", 3.0)]


def _wire(request: Any) -> list[Any]:
    """The decoded request without times and otel-kit's own scope: per scope and metric, the
    points' attributes and values, buckets, exemplars (ids, value)."""
    out = []
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            if scope.name == "otel_kit":
                continue
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                points = []
                for p in data.data_points:
                    fields = {
                        f.name: v
                        for f, v in p.ListFields()
                        if f.name not in ("start_time_unix_nano", "time_unix_nano")
                    }
                    fields["attributes"] = sorted(attributes(p.attributes).items())
                    fields["exemplars"] = [
                        (e.trace_id.hex(), e.span_id.hex(), e.as_double or e.as_int)
                        for e in p.exemplars
                    ]
                    points.append(repr(sorted(fields.items())))
                out.append(
                    (
                        scope.name,
                        scope.version,
                        scope_metrics.schema_url,
                        sorted(attributes(scope.attributes).items()),
                        metric.name,
                        metric.unit,
                        metric.description,
                        kind,
                        getattr(data, "aggregation_temporality", None),
                        getattr(data, "is_monotonic", None),
                        sorted(points),
                    )
                )
    return sorted(out, key=repr)


def test_otlp_carries_what_the_sdk_sends(make_handle: MakeHandle) -> None:
    sent = {}
    with OTLPReceiver() as receiver:
        for name, handle in setups(
            make_handle,
            metrics_exporter="otlp",
            otlp_endpoint=receiver.endpoint,
            export_interval_ms=60_000,
        ):
            handle.shutdown()  # the last push
            (request,) = receiver.requests()
            receiver.received.clear()
            sent[name] = _wire(request)
    assert sent["fast"] == sent["sdk"]
    scopes = {(m[0], m[1], m[2]) for m in sent["fast"]}
    assert ("shop", "1.2", "https://opentelemetry.io/schemas/1.30.0") in scopes
    orders = next(m for m in sent["fast"] if m[4] == "shop.orders")
    assert orders[7:10] == ("sum", 2, True)  # cumulative, monotonic


class Participant:
    """One 'process' of a multi-process view: otel-kit's provider, the shared directory."""

    def __init__(self, directory: Path) -> None:
        self.fast = Instruments("test", "trace_based", LIMIT)
        resource = Resource.create({"service.name": "shop"})
        reader = PullReader(self.fast, resource, LIMIT)
        self.provider = MeterProvider(user=self.fast.user, metric_readers=[reader])
        self.mp = Multiprocess(
            str(directory), reader, resource, keep_instance_id=False, cardinality_limit=LIMIT
        )

    def close(self) -> None:
        self.mp.close()
        self.provider.shutdown()


def test_the_multiprocess_merge_is_the_sdks(tmp_path: Path) -> None:
    merged = {}
    for name in ("fast", "sdk"):
        a, b = Participant(tmp_path / name), Participant(tmp_path / name)
        try:
            for participant in (a, b):
                provider = participant.provider
                record(provider.get_meter if name == "fast" else sdk_meters_of(provider))
            # the first scrape (it collects in every process): this period's exemplars
            merged[name + " openmetrics"] = exposition(
                openmetrics_generate(a.mp.registry).decode(),  # type: ignore[no-untyped-call]
                openmetrics=True,
            )
            merged[name] = exposition(generate_latest(b.mp.registry).decode())
        finally:
            a.close()
            b.close()
    assert merged["fast"] == merged["sdk"]
    assert merged["fast openmetrics"] == merged["sdk openmetrics"]
    assert any(s[3] for s in merged["fast openmetrics"])  # the exemplars crossed the merge
    values = {(s[0], dict(s[1]).get("method")): s[2] for s in merged["fast"]}
    assert values[("shop_orders_total", "card")] == 6  # 3 per process
    assert values[("shop_total_seconds_count", "card")] == 18


def test_what_the_fast_path_takes_and_leaves(make_handle: MakeHandle) -> None:
    handle = make_handle()
    meter = handle.meter_provider.get_meter("shop")
    assert isinstance(meter.create_counter("a"), UserCounter)
    assert isinstance(meter.create_up_down_counter("b"), UserUpDownCounter)
    assert isinstance(meter.create_histogram("c"), UserHistogram)
    # a view matches: otel-kit's duration buckets, and the KeepOne drop of contrib's copy
    assert isinstance(meter.create_histogram("http.server.request.duration"), _Synchronous)
    contrib = handle.meter_provider.get_meter("opentelemetry.instrumentation.httpx")
    assert isinstance(contrib.create_histogram("http.client.duration"), _Synchronous)
    assert isinstance(meter.create_gauge("d"), _Synchronous)
    # bucket advice the SDK would refuse: the SDK's instrument (and its own handling)
    assert isinstance(
        meter.create_histogram("e", explicit_bucket_boundaries_advisory=[2, 1]), _Synchronous
    )
    assert handle.meter_provider.get_meter("shop") is meter
    with pytest.raises(Exception, match="Expected ASCII string"):
        meter.create_counter("1-not-a-name")


def test_a_disabled_sdk_gives_its_no_op_meter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider = MeterProvider(user=Instruments("test", "trace_based", LIMIT).user)
    assert isinstance(provider.get_meter("shop"), NoOpMeter)
    provider.shutdown()


def test_dropped_measurements_log_the_sdks_warnings(
    make_handle: MakeHandle, caplog: pytest.LogCaptureFixture
) -> None:
    meter = make_handle().meter_provider.get_meter("shop")
    with caplog.at_level(logging.WARNING):
        meter.create_counter("orders").add(-1)
        meter.create_histogram("total").record(-2)
        meter.create_up_down_counter("depth").add(float("inf"))
    assert [r.getMessage() for r in caplog.records] == [
        "Add amount must be non-negative on Counter orders.",
        "Record amount must be non-negative on Histogram total.",
        "Add amount inf is not finite on UpDownCounter depth, ignoring measurement.",
    ]


def test_threads_lose_no_counts(make_handle: MakeHandle) -> None:
    handle = make_handle()
    meter = handle.meter_provider.get_meter("shop")
    counter, histogram = meter.create_counter("hits"), meter.create_histogram("lat")

    def work(worker: int) -> None:
        for i in range(2000):
            counter.add(1, {"w": worker % 2})
            histogram.record(i % 7, {"w": worker % 2})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = {(s[0], s[1]): s[2] for s in exposition(handle.render().decode())}
    assert sum(v for (n, _), v in samples.items() if n == "hits_total") == 8000
    assert sum(v for (n, _), v in samples.items() if n == "lat_count") == 8000
