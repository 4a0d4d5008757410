"""Exemplars (issue 16): otel-kit's histograms keep the newest exemplar per bucket under
exemplar_filter; the OpenMetrics exposition serves them (the classic text format never), the
HTTP server's points at the request's own server span under contrib's FastAPIInstrumentor,
user metrics through the OTel API carry the SDK's, and the multi-process snapshot keeps the
newest per bucket across processes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, use_span
from opentelemetry.trace.propagation import _SPAN_KEY
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from otel_kit._exporters.exemplars import newest
from otel_kit._exporters.multiprocess.snapshot import (
    HistogramPoint,
    Snapshot,
    decode,
    encode,
    merge_into,
    snapshot_of,
    to_metrics_data,
)
from otel_kit._exporters.prometheus import _label_value
from otel_kit._instruments import FastHistogram, FastInstruments, _CurrentContext, current_span
from otel_kit.catalogue import HTTP_SERVER_REQUEST_DURATION
from tests.contrib import recorded_spans
from tests.handles import MakeHandle
from tests.http_app import client, make_app

BOUNDS = (0.1, 1.0)
KEY = ("GET", "/items/{item_id}", 200, None, "http", "1.1")
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0x00F067AA0BA902B7


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    with recorded_spans() as pair:
        yield pair


def remote_span(*, sampled: bool) -> NonRecordingSpan:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, is_remote=True, trace_flags=flags))


def point_of(h: FastHistogram) -> HistogramDataPoint:
    (point,) = h.metric(0, 1).data.data_points
    assert isinstance(point, HistogramDataPoint)
    return point


def exemplars(h: FastHistogram) -> list[tuple[float, int | None, int | None]]:
    return [(e.value, e.trace_id, e.span_id) for e in point_of(h).exemplars]


def histogram(exemplar_filter: str) -> FastHistogram:
    return FastHistogram(HTTP_SERVER_REQUEST_DURATION, BOUNDS, 10, exemplar_filter)


def test_trace_based_keeps_the_newest_sampled_measurement_per_bucket() -> None:
    h = histogram("trace_based")
    h.record(0.05, KEY)  # no span: no exemplar
    with use_span(remote_span(sampled=False)):
        h.record(0.06, KEY)  # not sampled: none
    with use_span(remote_span(sampled=True)):
        h.record(0.07, KEY)
        h.record(0.5, KEY)
        h.record(0.08, KEY)  # newer in the first bucket: replaces 0.07
    h.record(0.09, KEY)  # no span: the bucket keeps 0.08
    h.record(0.2, KEY, remote_span(sampled=True))  # the span given, not the current one
    assert exemplars(h) == [(0.08, TRACE_ID, SPAN_ID), (0.2, TRACE_ID, SPAN_ID)]
    assert list(point_of(h).bucket_counts) == [5, 2, 0]


def test_always_on_without_a_span_and_always_off() -> None:
    on = histogram("always_on")
    on.record(2.0, KEY)
    with use_span(remote_span(sampled=False)):
        on.record(0.05, KEY)  # any measurement; the ids of a valid span, sampled or not
    assert exemplars(on) == [(0.05, TRACE_ID, SPAN_ID), (2.0, None, None)]
    off = histogram("always_off")
    with use_span(remote_span(sampled=True)):
        off.record(0.05, KEY)
    assert exemplars(off) == []


def openmetrics_exemplars(text: str, name: str) -> dict[str, tuple[str, str, float]]:
    """{le or sample name: (trace_id, span_id, value)} of the samples called `name`."""
    return {
        sample.labels.get("le", sample.name): (
            sample.exemplar.labels["trace_id"],
            sample.exemplar.labels["span_id"],
            sample.exemplar.value,
        )
        for family in text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
        for sample in family.samples
        if sample.name == name and sample.exemplar is not None
    }


@pytest.mark.parametrize("otel_kit_outside", [False, True])
async def test_http_exemplar_is_the_server_span_of_contribs_fastapi_instrumentor(
    make_handle: MakeHandle,
    traced: tuple[TracerProvider, InMemorySpanExporter],
    otel_kit_outside: bool,
) -> None:
    """otel-kit's middleware inside contrib's (set up before FastAPIInstrumentor's outermost
    one is built) or outside it (set up after the app started, as `otel-kit run` may). A
    request that raises (a 500 from Starlette's error middleware inside contrib's, then the
    exception) is recorded outside after contrib's server span ended: with the span the app
    answered in."""
    provider, spans = traced
    app = make_app()
    if otel_kit_outside:
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
        app.middleware_stack = app.build_middleware_stack()  # the app has started
        handle = make_handle(app, duration_buckets="0.05,10")
    else:
        handle = make_handle(app, duration_buckets="0.05,10")
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    try:
        async with client(app) as c:
            assert (await c.get("/slow")).status_code == 200  # 0.1 s: the 10 s bucket
            assert (await c.get("/boom")).status_code == 500
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    servers = {
        span.attributes["http.route"]: span
        for span in spans.get_finished_spans()
        if span.kind is SpanKind.SERVER and span.attributes
    }
    assert set(servers) == {"/slow", "/boom"}
    text = handle.render(openmetrics=True).decode()
    found = openmetrics_exemplars(text, "http_server_request_duration_seconds_bucket")
    assert set(found) == {"10.0", "0.05"}
    slow, boom = found["10.0"], found["0.05"]
    for (trace_id, span_id, _), route in ((slow, "/slow"), (boom, "/boom")):
        span_context = servers[route].context
        assert span_context is not None
        assert (trace_id, span_id) == (
            f"{span_context.trace_id:032x}",
            f"{span_context.span_id:016x}",
        )
    assert 0.09 < slow[2] < 10  # asyncio.sleep(0.1) may end a little early
    assert " # {" not in handle.render().decode()  # the classic text format has no exemplars


async def test_user_metrics_through_the_otel_api_carry_the_sdks_exemplars(
    make_handle: MakeHandle, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, _ = traced
    handle = make_handle()
    meter = handle.meter_provider.get_meter("shop")
    totals = meter.create_histogram(
        "order.total", unit="dollars", explicit_bucket_boundaries_advisory=[10, 100]
    )
    orders = meter.create_counter("orders.created")
    with provider.get_tracer("shop").start_as_current_span("checkout") as span:
        totals.record(42, {"payment_method": "card"})
        orders.add(1, {"payment_method": "card"})
    ids = (f"{span.get_span_context().trace_id:032x}", f"{span.get_span_context().span_id:016x}")
    totals.record(7, {"payment_method": "card"})  # no span: no exemplar (trace_based)
    text = handle.render(openmetrics=True).decode()
    assert openmetrics_exemplars(text, "order_total_dollars_bucket") == {"100.0": (*ids, 42.0)}
    assert openmetrics_exemplars(text, "orders_created_total") == {
        "orders_created_total": (*ids, 1.0)
    }


def test_exemplar_labels_stay_within_openmetrics_128_characters() -> None:
    long = {"a": "x" * 65, "b": "y" * 10, "c": "z" * 70}
    exemplar = newest(
        [Exemplar(long, 0.5, 1_700_000_000_000_000_000, SPAN_ID, TRACE_ID)], _label_value
    )
    assert exemplar.labels == {
        "trace_id": f"{TRACE_ID:032x}",
        "span_id": f"{SPAN_ID:016x}",
        "b": "y" * 10,  # a (66 characters) does not fit after the ids (63); b does; c not
    }
    assert sum(len(k) + len(v) for k, v in exemplar.labels.items()) == 74
    assert (exemplar.value, exemplar.timestamp) == (0.5, 1_700_000_000.0)
    exactly = newest([Exemplar({"a": "é" * 64}, 0.5, 0, SPAN_ID, TRACE_ID)], _label_value)
    assert sum(len(k) + len(v) for k, v in exactly.labels.items()) == 128


def process(value: float, time_ns: int, trace_id: int) -> bytes:
    """One process's snapshot file: one request of `value` seconds with its exemplar."""
    fast = FastInstruments("1", "always_on")
    h = fast.histogram(HTTP_SERVER_REQUEST_DURATION, BOUNDS, 10)
    h.record(value, KEY)
    data = fast.merge(None, Resource.create({}))
    snapshot = snapshot_of(data)
    for metric in snapshot.values():
        for p in metric.points.values():
            assert isinstance(p, HistogramPoint)
            ((index, (v, _, _, _)),) = p.exemplars.items()
            p.exemplars = {index: (v, time_ns, trace_id, SPAN_ID)}
    return encode(snapshot, pid=1)


def test_snapshot_merge_keeps_the_newest_exemplar_per_bucket_across_processes() -> None:
    total: Snapshot = {}
    for raw in (process(0.05, 30, 1), process(0.07, 20, 2), process(0.5, 10, 3)):
        snapshot, _ = decode(raw)
        merge_into(total, snapshot, live=True, limit=10)
    data = to_metrics_data(total, Resource.create({}))
    (point,) = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert isinstance(point, HistogramDataPoint)
    assert list(point.bucket_counts) == [2, 1, 0]
    assert sorted((e.value, e.time_unix_nano, e.trace_id) for e in point.exemplars) == [
        (0.05, 30, 1),  # newer than 0.07's (20) in the same bucket
        (0.5, 10, 3),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        [[3, 0.5, 1, "00", "00"]],  # no bucket 3 for two bounds
        [[0, 0.5, "1", "00", "00"]],  # time as text
        [[0, 0.5, 1, "not hex", "00"]],
    ],
)
def test_malformed_exemplars_make_a_malformed_snapshot(bad: list[list[object]]) -> None:
    document = json.loads(process(0.05, 1, 1))
    document["metrics"][0][5][0][6] = bad  # the first point's exemplars
    with pytest.raises(ValueError, match="malformed otel-kit snapshot"):
        decode(json.dumps(document).encode())


def test_the_current_span_is_the_otel_contexts_one_either_way() -> None:
    """One ContextVar read, or the OTel API's when another runtime context is configured."""
    span = remote_span(sampled=True)
    assert current_span() is None
    with use_span(span):
        assert current_span() is span
        assert _CurrentContext.get().get(_SPAN_KEY) is span
