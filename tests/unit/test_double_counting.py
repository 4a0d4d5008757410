"""Contrib's instrumentors enabled beside otel-kit's integrations (issue 17): each metric has one
series set, otel-kit's, with exact counts; contrib's spans and its other metrics stay; with the
otel-kit integration disabled, contrib's metrics pass through. In-process: a FastAPI app through
httpx's ASGI transport, SQLAlchemy on SQLite, the process itself (system metrics)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_kit import setup_metrics
from otel_kit._dedup import SOURCES, Source
from otel_kit._instrumentation import INTEGRATIONS
from tests.contrib import OTEL_KIT, by, old_and_stable_names, read, recorded_spans, scopes, value
from tests.handles import MakeHandle
from tests.http_app import client, make_app

CONTRIB_FASTAPI = "opentelemetry.instrumentation.fastapi"
DURATION = "http_server_request_duration_seconds_count"


@pytest.fixture
def semconv(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with old_and_stable_names(monkeypatch):
        yield


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    with recorded_spans() as pair:
        yield pair


@pytest.fixture
def tracer_provider(traced: tuple[TracerProvider, InMemorySpanExporter]) -> TracerProvider:
    return traced[0]


@pytest.fixture
def spans(traced: tuple[TracerProvider, InMemorySpanExporter]) -> InMemorySpanExporter:
    return traced[1]


async def serve_requests(
    make_handle: MakeHandle, tracer_provider: TracerProvider, **settings: object
) -> str:
    """3 x GET /items/{id}, 1 x GET /boom (a 500) through otel-kit's middleware and contrib's
    FastAPI instrumentor on one app; the exposition after them."""
    app = make_app()
    handle = make_handle(app, **settings)
    FastAPIInstrumentor.instrument_app(
        app, meter_provider=handle.meter_provider, tracer_provider=tracer_provider
    )
    try:
        async with client(app) as c:
            for i in range(3):
                assert (await c.get(f"/items/{i}")).status_code == 200
            assert (await c.get("/boom")).status_code == 500
        return handle.render().decode()
    finally:
        FastAPIInstrumentor.uninstrument_app(app)


@pytest.mark.usefixtures("semconv")
async def test_contrib_fastapi_beside_otel_kit_counts_each_request_once(
    make_handle: MakeHandle, tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    text = await serve_requests(make_handle, tracer_provider, http_body_sizes=True)
    assert by(text, DURATION, "http_route", "http_response_status_code") == {
        (OTEL_KIT, "/items/{item_id}", "200"): 3,
        (OTEL_KIT, "/boom", "500"): 1,
    }
    found = scopes(text)
    for name in (
        "http_server_active_requests",
        "http_server_request_body_size_bytes_count",
        "http_server_response_body_size_bytes_count",
    ):
        assert found[name] == {OTEL_KIT}, name
    # contrib's old names for the same measurements (ms durations, sizes) are gone too
    old = [n for n in found if n.startswith(("http_server_duration", "http_server_response_size"))]
    assert old == []
    assert not [n for n in found if n.startswith("http_server_request_size")]
    # contrib's tracing is untouched: one server span per request
    server = [s.name for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert sorted(server) == ["GET /boom"] + ["GET /items/{item_id}"] * 3


@pytest.mark.usefixtures("semconv")
async def test_with_otel_kit_fastapi_disabled_contrib_metrics_pass_through(
    make_handle: MakeHandle, tracer_provider: TracerProvider
) -> None:
    text = await serve_requests(make_handle, tracer_provider, disabled_instrumentations="fastapi")
    assert by(text, DURATION, "http_route", "http_response_status_code") == {
        (CONTRIB_FASTAPI, "/items/{item_id}", "200"): 3,
        (CONTRIB_FASTAPI, "/boom", "500"): 1,
    }
    assert value(text, "http_server_duration_milliseconds_count") == 4
    assert scopes(text)["http_server_active_requests"] == {CONTRIB_FASTAPI}


@pytest.mark.usefixtures("semconv")
async def test_what_otel_kit_does_not_record_is_kept(
    make_handle: MakeHandle, tracer_provider: TracerProvider
) -> None:
    """Body sizes are opt-in, active requests can be off: contrib's copy is then the only one."""
    text = await serve_requests(make_handle, tracer_provider, http_active_requests=False)
    assert scopes(text)[DURATION] == {OTEL_KIT}
    assert scopes(text)["http_server_active_requests"] == {CONTRIB_FASTAPI}
    assert value(text, "http_server_response_body_size_bytes_count") == 4
    assert value(text, "http_server_response_size_bytes_count") == 4
    assert scopes(text)["http_server_response_body_size_bytes_count"] == {CONTRIB_FASTAPI}


@pytest.mark.usefixtures("global_metrics", "semconv")
@pytest.mark.parametrize("disabled", [(), ("fastapi",)])
async def test_fastapi_native_telemetry_and_contrib_beside_otel_kit(
    tracer_provider: TracerProvider, disabled: tuple[str, ...]
) -> None:
    """FastAPI >= 0.165 records the same two metrics itself through the global MeterProvider,
    unless contrib's middleware is in the app's stack; otel-kit turns them off on the app it
    measures. One series set either way: otel-kit's, or with "fastapi" disabled contrib's."""
    app = make_app()
    if not hasattr(app, "_telemetry"):
        pytest.skip("FastAPI < 0.165 has no telemetry of its own")
    handle = setup_metrics(app, disabled_instrumentations=disabled)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider)  # the global one
    try:
        async with client(app) as c:
            for i in range(3):
                assert (await c.get(f"/items/{i}")).status_code == 200
        text = handle.render().decode()
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    meter = CONTRIB_FASTAPI if disabled else OTEL_KIT
    expected = {(meter, "/items/{item_id}", "200"): 3}
    assert by(text, DURATION, "http_route", "http_response_status_code") == expected


def run_queries(
    make_handle: MakeHandle, tracer_provider: TracerProvider, **settings: object
) -> str:
    """3 x SELECT on SQLite with contrib's SQLAlchemy instrumentor on the engine too."""
    handle = make_handle(**settings)
    engine = sa.create_engine("sqlite://")
    # skip_dep_check: contrib 0.66 declares SQLAlchemy < 2.1 and works on 2.1 all the same
    SQLAlchemyInstrumentor().instrument(
        engine=engine,
        meter_provider=handle.meter_provider,
        tracer_provider=tracer_provider,
        skip_dep_check=True,
    )
    try:
        with engine.connect() as conn:
            for _ in range(3):
                conn.execute(sa.text("SELECT 1"))
        return handle.render().decode()
    finally:
        SQLAlchemyInstrumentor().uninstrument()
        engine.dispose()


@pytest.mark.usefixtures("semconv")
def test_contrib_sqlalchemy_beside_otel_kit(
    make_handle: MakeHandle, tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    text = run_queries(make_handle, tracer_provider)
    assert (
        value(text, "db_client_operation_duration_seconds_count", db_operation_name="SELECT") == 3
    )
    found = scopes(text)
    assert "db_client_connections_usage" not in found  # contrib's pool usage: ours is the count
    assert found["db_client_connection_count"] == {OTEL_KIT}
    assert found["db_client_operation_duration_seconds_count"] == {OTEL_KIT}
    assert [s.name for s in spans.get_finished_spans()] == ["connect"] + ["SELECT"] * 3


@pytest.mark.usefixtures("semconv")
def test_with_otel_kit_sqlalchemy_disabled_contrib_pool_usage_passes_through(
    make_handle: MakeHandle, tracer_provider: TracerProvider
) -> None:
    text = run_queries(make_handle, tracer_provider, disabled_instrumentations="sqlalchemy")
    contrib = "opentelemetry.instrumentation.sqlalchemy"
    usage = by(text, "db_client_connections_usage", "state")
    assert usage == {(contrib, "idle"): 1, (contrib, "used"): 0}
    assert "db_client_connection_count" not in scopes(text)


@pytest.mark.parametrize("disabled", [(), ("runtime",)])
def test_contrib_system_metrics_beside_otel_kit_runtime(
    make_handle: MakeHandle, disabled: tuple[str, ...]
) -> None:
    handle = make_handle(disabled_instrumentations=disabled)
    config = {
        "process.cpu.time": ["user", "system"],
        "process.thread.count": None,
        "process.open_file_descriptor.count": None,
        "cpython.gc.collections": None,
        "system.thread_count": None,  # not otel-kit's: kept
    }
    instrumentor = SystemMetricsInstrumentor(config=config)
    instrumentor.instrument(meter_provider=handle.meter_provider)
    try:
        found = scopes(handle.render().decode())
    finally:
        instrumentor.uninstrument()
    contrib = "opentelemetry.instrumentation.system_metrics"
    assert found["system_thread_count"] == {contrib}
    expected = {contrib} if disabled else {"otel_kit.runtime"}
    for name in ("process_cpu_time_seconds_total", "process_thread_count"):
        assert found[name] == expected, name
    assert ("process_open_file_descriptor_count" in found) is bool(disabled)


REGISTERED = {entry.name for entry in INTEGRATIONS}


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.scope)
def test_every_source_is_dropped_while_its_integration_is_on(
    make_handle: MakeHandle, source: Source
) -> None:
    """Each row of the table, through a meter of that source's name: the contrib instrumentors
    that no release installs beside this SDK yet (urllib3, aiohttp, asyncpg, psycopg), the ASGI
    middleware alone, Starlette's, redis-py's own. A row of an integration not registered yet
    is inert."""
    handle = make_handle(http_body_sizes=True)
    meter = handle.meter_provider.get_meter(source.scope)
    for name in source.metrics:
        meter.create_histogram(name, unit="s").record(0.5, {"source": "other"})
    meter.create_counter("other.thing").add(1, {"source": "other"})  # not otel-kit's: kept
    text = handle.render().decode()
    other = {n for n, labels, _ in read(text) if labels.get("source") == "other"}
    if REGISTERED.issuperset(source.integrations):
        assert other == {"other_thing_total"}
    else:
        assert len(other) > len(source.metrics)


def test_one_info_line_per_source(
    make_handle: MakeHandle, caplog: pytest.LogCaptureFixture
) -> None:
    handle = make_handle()
    meter = handle.meter_provider.get_meter("opentelemetry.instrumentation.httpx")
    with caplog.at_level(logging.INFO, logger="otel_kit"):
        for name in ("http.client.request.duration", "http.client.duration"):
            histogram = meter.create_histogram(name)
            for status in (200, 500):
                histogram.record(0.1, {"http.response.status_code": status})
        handle.render()
        handle.render()
    lines = [r.getMessage() for r in caplog.records if "records" in r.getMessage()]
    assert lines == [
        "otel-kit: opentelemetry.instrumentation.httpx records http.client.request.duration, "
        "which otel-kit's httpx integration records already: dropped, as are its other copies "
        "of otel-kit's metrics, so each is counted once. To keep that source's instead, turn "
        "otel-kit's off: OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=httpx"
    ]


@pytest.mark.parametrize(
    ("disabled", "kept"), [((), False), (("requests",), True), (("urllib3",), True)]
)
def test_contrib_requests_is_dropped_only_while_otel_kit_measures_requests_calls(
    make_handle: MakeHandle, disabled: tuple[str, ...], kept: bool
) -> None:
    """otel-kit measures requests' calls in urllib3 (both integrations on)."""
    if not REGISTERED.issuperset({"requests", "urllib3"}):
        pytest.skip("otel-kit's requests and urllib3 integrations are not registered")
    handle = make_handle(disabled_instrumentations=disabled)
    meter = handle.meter_provider.get_meter("opentelemetry.instrumentation.requests")
    meter.create_histogram("http.client.request.duration", unit="s").record(0.5)
    text = handle.render().decode()
    assert value(text, "http_client_request_duration_seconds_count") == (1 if kept else 0)
