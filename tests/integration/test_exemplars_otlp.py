"""Exemplars pushed over OTLP (issue 16): otel-kit's HTTP server histogram and a user histogram
recorded inside a sampled span carry that span's trace and span ids on the wire, decoded by
the official protobuf classes (tests/integration/otlp_receiver.py)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan

from tests.contrib import recorded_spans
from tests.handles import MakeHandle
from tests.http_app import client
from tests.integration.otlp_receiver import OTLPReceiver, points

pytestmark = pytest.mark.integration


async def test_otlp_push_carries_the_exemplars_of_a_sampled_span(make_handle: MakeHandle) -> None:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    with recorded_spans() as (provider, _), OTLPReceiver() as receiver:
        handle = make_handle(
            app,
            metrics_exporter="otlp",
            otlp_endpoint=receiver.endpoint,
            duration_buckets="1,10",
            export_interval_ms=60_000,  # only the flush at shutdown sends
        )
        totals = handle.meter_provider.get_meter("shop").create_histogram(
            "order.total", unit="dollars", explicit_bucket_boundaries_advisory=[10, 100]
        )
        async with client(app) as c:
            assert (await c.get("/items/1")).status_code == 200  # no span: no exemplar
            with provider.get_tracer("test").start_as_current_span("checkout") as span:
                assert (await c.get("/items/2")).status_code == 200
                totals.record(42.5)
        handle.shutdown()
    (request,) = receiver.requests()
    context = span.get_span_context()
    ids = (context.trace_id.to_bytes(16, "big"), context.span_id.to_bytes(8, "big"))
    (http,) = points(request, "http.server.request.duration").values()
    assert http.count == 2
    (exemplar,) = http.exemplars
    assert (exemplar.trace_id, exemplar.span_id) == ids
    assert 0 < exemplar.as_double < 1  # the first bucket's
    assert isinstance(span, ReadableSpan)
    assert span.start_time is not None
    assert exemplar.time_unix_nano >= span.start_time
    (user,) = points(request, "order.total").values()
    (exemplar,) = user.exemplars
    assert (exemplar.trace_id, exemplar.span_id, exemplar.as_double) == (*ids, 42.5)
