"""Libraries measured twice, against real servers on loopback (issue 17): contrib's httpx and
requests instrumentors calling a real HTTP server, redis-py's own metrics and contrib's Redis
instrumentor on the session's redis-server. Each metric otel-kit records has one series set,
otel-kit's, with exact counts; contrib's spans still come; with otel-kit's integration
disabled, the other source's metrics pass through."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
import redis
import requests
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_kit import setup_metrics
from otel_kit._instrumentation import INTEGRATIONS
from tests.contrib import OTEL_KIT, by, old_and_stable_names, recorded_spans, scopes, value
from tests.handles import MakeHandle
from tests.integration.http_peer import peer_server

pytestmark = pytest.mark.integration
CLIENT = "http_client_request_duration_seconds_count"
DB = "db_client_operation_duration_seconds_count"


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with peer_server() as url:
        yield url


@pytest.fixture(autouse=True)
def semconv(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with old_and_stable_names(monkeypatch):
        yield


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    with recorded_spans() as pair:
        yield pair


def client_spans(spans: InMemorySpanExporter) -> list[str]:
    return sorted(s.name for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT)


@pytest.mark.parametrize("disabled", [(), ("httpx",)])
def test_contrib_httpx_beside_otel_kit(
    make_handle: MakeHandle,
    base: str,
    traced: tuple[TracerProvider, InMemorySpanExporter],
    disabled: tuple[str, ...],
) -> None:
    handle = make_handle(disabled_instrumentations=disabled)
    tracer_provider, spans = traced
    with httpx.Client(base_url=base) as c:
        HTTPXClientInstrumentor.instrument_client(
            c, tracer_provider=tracer_provider, meter_provider=handle.meter_provider
        )
        for _ in range(3):
            assert c.get("/status/200").status_code == 200
        assert c.get("/status/404").status_code == 404
        HTTPXClientInstrumentor.uninstrument_client(c)
    text = handle.render().decode()
    meter = "opentelemetry.instrumentation.httpx" if disabled else OTEL_KIT
    assert by(text, CLIENT, "http_response_status_code") == {(meter, "200"): 3, (meter, "404"): 1}
    # contrib's old name for the same measurement (ms), only while otel-kit's is off
    assert value(text, "http_client_duration_milliseconds_count") == (4 if disabled else 0)
    assert client_spans(spans) == ["GET"] * 4


@pytest.mark.parametrize("disabled", [(), ("requests",)])
def test_contrib_requests_beside_otel_kit(
    make_handle: MakeHandle,
    base: str,
    traced: tuple[TracerProvider, InMemorySpanExporter],
    disabled: tuple[str, ...],
) -> None:
    registered = {entry.name for entry in INTEGRATIONS}
    if not registered.issuperset({"requests", "urllib3"}):
        pytest.skip("otel-kit measures no requests calls yet")
    handle = make_handle(disabled_instrumentations=disabled)
    tracer_provider, spans = traced
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=handle.meter_provider)
    try:
        with requests.Session() as session:
            for _ in range(2):
                assert session.get(f"{base}/status/200").status_code == 200
            assert session.get(f"{base}/status/503").status_code == 503
    finally:
        instrumentor.uninstrument()
    text = handle.render().decode()
    meter = "opentelemetry.instrumentation.requests" if disabled else OTEL_KIT
    assert by(text, CLIENT, "http_response_status_code") == {(meter, "200"): 2, (meter, "503"): 1}
    assert value(text, "http_client_duration_milliseconds_count") == (3 if disabled else 0)
    assert client_spans(spans) == ["GET"] * 3


@pytest.fixture
def redis_py_metrics() -> Iterator[Callable[[], None]]:
    """`enable()`: redis-py's own metrics (redis-py >= 7.2), commands included, through the
    global MeterProvider; off again afterwards. Call it after setup: redis-py keeps the global
    provider it first finds, and before setup that is the API's proxy, which a later test's
    provider never reaches."""
    observability = pytest.importorskip("redis.observability", reason="redis-py < 7.2")
    instance = observability.get_observability_instance()
    groups = [observability.MetricGroup.COMMAND, observability.MetricGroup.CONNECTION_BASIC]

    def enable() -> None:
        instance.init(observability.OTelConfig(metric_groups=groups))

    yield enable
    instance.init(observability.OTelConfig(enabled_telemetry=[]))
    observability.reset_observability_instance()


@pytest.mark.usefixtures("global_metrics")
@pytest.mark.parametrize("disabled", [(), ("redis",)])
def test_redis_py_own_metrics_and_contrib_redis_beside_otel_kit(
    redis_server: int,
    traced: tuple[TracerProvider, InMemorySpanExporter],
    redis_py_metrics: Callable[[], None],
    disabled: tuple[str, ...],
) -> None:
    handle = setup_metrics(
        prometheus_host="127.0.0.1", prometheus_port=0, disabled_instrumentations=disabled
    )
    redis_py_metrics()
    tracer_provider, spans = traced
    instrumentor = RedisInstrumentor()  # spans only: contrib 0.66 records no Redis metrics
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=handle.meter_provider)
    try:
        with redis.Redis(port=redis_server) as client:
            client.set("double-counting", "1")
            for _ in range(3):
                assert client.get("double-counting") == b"1"
    finally:
        instrumentor.uninstrument()
    text = handle.render().decode()
    meter = "redis-py" if disabled else OTEL_KIT
    assert by(text, DB, "db_operation_name") == {(meter, "SET"): 1, (meter, "GET"): 3}
    # redis-py's pool metrics are not otel-kit's: kept either way
    assert scopes(text)["db_client_connection_create_time_seconds_count"] == {"redis-py"}
    assert sorted(s.name for s in spans.get_finished_spans()) == ["GET"] * 3 + ["SET"]
