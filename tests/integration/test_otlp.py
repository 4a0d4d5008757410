"""Collector mode: OTLP push over http/protobuf and gRPC, checked on the wire by a local
receiver that decodes with the official protobuf classes (no Collector binary exists here);
settings; resilience to a Collector that is down at startup and mid-run; flush on SIGTERM."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi import FastAPI, HTTPException
from opentelemetry import metrics as otel_metrics
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from otel_kit import ConfigError, Settings, setup_metrics
from otel_kit._exporters.push import ExportHealth
from otel_kit.config import load_settings
from tests.exposition import value
from tests.handles import MakeHandle
from tests.integration.otlp_receiver import (
    OTLPReceiver,
    metrics,
    points,
    resource,
    total_count,
)
from tests.integration.processes import ROOT, free_port

pytestmark = pytest.mark.integration
PROTOCOLS = ["http/protobuf", "grpc"]
DURATION = "http.server.request.duration"
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


# -- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL = 'http/json': allowed: http/protobuf, grpc",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317"},
            "OTEL_EXPORTER_OTLP_ENDPOINT = 'localhost:4317': expected an http:// or https:// URL",
        ),
        (
            {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://:4318/v1/metrics"},
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT = 'http://:4318/v1/metrics': expected an http",
        ),
        (
            {"OTEL_EXPORTER_OTLP_HEADERS": "api-key"},
            "OTEL_EXPORTER_OTLP_HEADERS = <redacted>: expected name1=value1,name2=value2",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TIMEOUT": "10"},  # seconds, as the Python SDK alone reads it
            "OTEL_EXPORTER_OTLP_TIMEOUT = '10': expected an integer number of milliseconds",
        ),
    ],
)
def test_bad_otlp_settings_fail_at_startup(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, setting in env.items():
        monkeypatch.setenv(name, setting)
    with pytest.raises(ConfigError) as error:
        setup_metrics(metrics_exporter="otlp")
    assert message in str(error.value)


def test_signal_specific_variables_win_and_headers_stay_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "GRPC")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20c2VjcmV0,X-A=1")
    settings = load_settings()
    assert settings.otlp_protocol == "grpc"
    assert settings.otlp_timeout_ms == 2500
    headers = {name: secret.get_secret_value() for name, secret in settings.otlp_headers.items()}
    assert headers == {"authorization": "Basic c2VjcmV0", "x-a": "1"}
    assert "c2VjcmV0" not in repr(settings)
    assert Settings().otlp_protocol == "grpc"  # the same table without load_settings()


# -- the warning policy (a fake clock: minutes of outage in no time) ------------------------


def test_one_warning_per_outage_and_a_summary_every_five_minutes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    health = ExportHealth("http://collector:4318/v1/metrics", clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="otel_kit")
    for _ in range(120):  # a failed export every 5 s for 10 minutes
        health.failed("connection refused")
        now[0] += 5
    health.succeeded()
    health.succeeded()
    health.failed("503")
    lines = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert [level for level, _ in lines] == ["WARNING", "WARNING", "INFO", "WARNING"]
    assert (
        "cannot export metrics to http://collector:4318/v1/metrics (connection refused)"
        in (lines[0][1])
    )
    assert "still failing: 61 failed exports in 300 s (last: connection refused)" in lines[1][1]
    assert "works again after 120 failed exports in 600 s" in lines[2][1]
    assert "(503)" in lines[3][1]


# -- the wire format ------------------------------------------------------------------------


def add_shop_routes(app: FastAPI) -> None:
    """Call after setup_metrics(): meters taken earlier would bind to a previous test's
    provider (the OTel API's proxy provider keeps the first real one it saw)."""
    meter = otel_metrics.get_meter("shop")
    orders = meter.create_counter("shop.orders", unit="{order}", description="Orders placed")
    order_value = meter.create_histogram(
        "shop.order.value", unit="EUR", explicit_bucket_boundaries_advisory=[10, 100, 1000]
    )

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.post("/orders/{payment}/{total}")
    async def order(payment: str, total: float) -> dict[str, str]:
        orders.add(1, {"payment.method": payment})
        order_value.record(total, {"payment.method": payment})
        return {"ok": "yes"}

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("broken")

    @app.get("/unavailable")
    async def unavailable() -> None:
        raise HTTPException(503)


async def drive_shop(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        for item_id in (1, 1, 1, 2, 2):
            assert (await client.get(f"/items/{item_id}")).status_code == 200
        for payment, total in (("card", 5), ("card", 50), ("paypal", 500)):
            assert (await client.post(f"/orders/{payment}/{total}")).status_code == 200
        assert (await client.get("/boom")).status_code == 500
        assert (await client.get("/unavailable")).status_code == 503
        assert (await client.get("/no/such/path")).status_code == 404


@pytest.mark.usefixtures("global_metrics")  # the shop's meter comes from get_meter()
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_wire_format(protocol: str) -> None:
    with OTLPReceiver(protocol) as receiver:
        app = FastAPI()
        handle = setup_metrics(
            app,
            metrics_exporter="otlp",
            otlp_protocol=protocol,
            otlp_endpoint=receiver.endpoint,
            otlp_headers={"Authorization": "Bearer t0ken"},
            service_name="shop",
            service_version="1.2.3",
            resource_attributes="team=payments",
            duration_buckets="1,10",
            export_interval_ms=60_000,  # only the flush at shutdown sends
        )
        add_shop_routes(app)
        await drive_shop(app)
        assert receiver.requests() == []
        handle.shutdown()

    (received,) = receiver.received
    assert received.headers["authorization"] == "Bearer t0ken"
    assert received.path == ("Export" if protocol == "grpc" else "/v1/metrics")
    request = received.request
    attributes = resource(request)
    instance = attributes.pop("service.instance.id")
    assert instance == handle.resource.attributes["service.instance.id"]
    assert uuid.UUID(instance).version == 4
    assert attributes == {
        "service.name": "shop",
        "service.version": "1.2.3",
        "team": "payments",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": attributes["telemetry.sdk.version"],
    }

    sent = metrics(request)  # fails if any metric is sent twice (e.g. by FastAPI itself)
    scope, duration = sent[DURATION]
    assert (scope, duration.unit, duration.histogram.aggregation_temporality) == (
        "otel_kit",
        "s",
        CUMULATIVE,
    )

    def key(route: str | None, status: int, method: str = "GET", error: str = "") -> Any:
        attributes = {"http.request.method": method, "http.response.status_code": status}
        attributes |= {"url.scheme": "http", "network.protocol.version": "1.1"}
        attributes |= {"http.route": route} if route else {}
        attributes |= {"error.type": error} if error else {}
        return frozenset(attributes.items())

    sent_points = {
        key: (point.count, list(point.bucket_counts))
        for key, point in points(request, DURATION).items()
    }
    assert sent_points == {
        key("/items/{item_id}", 200): (5, [5, 0, 0]),
        key("/orders/{payment}/{total}", 200, "POST"): (3, [3, 0, 0]),
        key("/boom", 500, error="ValueError"): (1, [1, 0, 0]),
        key("/unavailable", 503, error="503"): (1, [1, 0, 0]),
        key(None, 404): (1, [1, 0, 0]),  # unmatched path: no route
    }
    point = next(iter(points(request, DURATION).values()))
    assert list(point.explicit_bounds) == [1.0, 10.0]
    assert 0 < point.start_time_unix_nano < point.time_unix_nano

    scope, active = sent["http.server.active_requests"]
    assert (scope, active.sum.is_monotonic, active.sum.aggregation_temporality) == (
        "otel_kit",
        False,
        CUMULATIVE,
    )
    active_points = {
        key: point.as_int for key, point in points(request, "http.server.active_requests").items()
    }
    assert active_points == {
        frozenset({("http.request.method", "GET"), ("url.scheme", "http")}): 0,
        frozenset({("http.request.method", "POST"), ("url.scheme", "http")}): 0,
    }

    scope, orders = sent["shop.orders"]
    assert (scope, orders.unit, orders.sum.is_monotonic) == ("shop", "{order}", True)
    assert orders.sum.aggregation_temporality == CUMULATIVE
    assert {
        dict(key)["payment.method"]: point.as_int
        for key, point in points(request, "shop.orders").items()
    } == {"card": 2, "paypal": 1}
    values = {
        dict(key)["payment.method"]: (point.count, point.sum, point.min, point.max)
        for key, point in points(request, "shop.order.value").items()
    }
    assert values == {"card": (2, 55.0, 5.0, 50.0), "paypal": (1, 500.0, 500.0, 500.0)}
    card = next(
        p for k, p in points(request, "shop.order.value").items() if ("payment.method", "card") in k
    )
    assert (list(card.explicit_bounds), list(card.bucket_counts)) == ([10, 100, 1000], [1, 1, 0, 0])


@pytest.mark.usefixtures("global_metrics")  # the shop's meter comes from get_meter()
async def test_prometheus_and_otlp_at_once_see_the_same_counts() -> None:
    with OTLPReceiver() as receiver:
        app = FastAPI()
        handle = setup_metrics(
            app,
            metrics_exporter="prometheus,otlp",
            otlp_endpoint=receiver.endpoint,
            export_interval_ms=60_000,
        )
        add_shop_routes(app)
        await drive_shop(app)
        text = handle.render().decode()
        handle.shutdown()
    (request,) = receiver.requests()
    route = {"http.route": "/items/{item_id}"}
    assert total_count(request, DURATION, **route) == 5
    labels = {"http_route": "/items/{item_id}"}
    assert value(text, "http_server_request_duration_seconds_count", **labels) == 5
    assert value(text, "shop_orders_total") == total_count(request, "shop.orders") == 3


def test_spec_environment_variables(
    make_handle: MakeHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Base endpoint + /v1/metrics, percent-decoded headers, and the export interval."""
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint + "/otlp/")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "X-Scope-OrgID=team%20a")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
        handle = make_handle()
        # No shutdown yet: these come from the 200 ms timer.
        receiver.wait_for_count(3, timeout=10)
        handle.shutdown()
    assert {item.path for item in receiver.received} == {"/otlp/v1/metrics"}
    assert {item.headers["x-scope-orgid"] for item in receiver.received} == {"team a"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metrics_endpoint_wins_over_base_endpoint(
    make_handle: MakeHandle, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    with OTLPReceiver(protocol) as receiver:
        path = "/custom/path" if protocol == "http/protobuf" else ""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", receiver.endpoint + path)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-generic=1")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-metrics=2")
        make_handle(metrics_exporter="otlp").shutdown()
    (received,) = receiver.received
    assert received.path == (path or "Export")
    assert received.headers["x-metrics"] == "2"
    assert "x-generic" not in received.headers


@contextmanager
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers: a hung Collector."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()


def test_timeout_is_milliseconds_and_bounds_the_last_flush(
    make_handle: MakeHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with silent_server() as port:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")
        handle = make_handle(metrics_exporter="otlp", otlp_endpoint=f"http://127.0.0.1:{port}")
        started = time.monotonic()
        handle.shutdown()
        took = time.monotonic() - started
    # 300 ms (one attempt, no time left for a retry), not 300 s: a generous sanity bound.
    assert took < 20
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.name == "otel_kit"
    assert f"cannot export metrics to http://127.0.0.1:{port}/v1/metrics" in warning.getMessage()


# -- real processes: outage and SIGTERM -------------------------------------------------------

APP = """
import logging, sys
import uvicorn
from fastapi import FastAPI
from opentelemetry import metrics
from otel_kit import setup_metrics

logging.basicConfig(level=logging.INFO, format="LOG %(levelname)s %(name)s %(message)s")
app = FastAPI()
setup_metrics(app, service_name="outage-test")
orders = metrics.get_meter("shop").create_counter("shop.orders")

@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    orders.add(1)
    return {"id": item_id}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
ITEMS = {"http.route": "/items/{item_id}"}


@contextmanager
def app_process(
    tmp_path: Path, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The app under uvicorn; yields (process, base URL); output goes to tmp_path/app.log."""
    script = tmp_path / "app.py"
    script.write_text(APP)
    port = free_port()
    with (tmp_path / "app.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(script), str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, (tmp_path / "app.log").read_text()
                try:
                    # counted: the test adds it (a timeout could count it twice: none short)
                    httpx.get(base + "/items/0", timeout=10)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the app did not start within 30 s"
                    time.sleep(0.1)
            yield process, base
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM; uvicorn shuts down gracefully, then re-raises the signal to die by it."""
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=20) in (0, -signal.SIGTERM)


class Load:
    """Sequential requests against the app, timing each and sampling the app's RSS."""

    def __init__(self, base: str, pid: int) -> None:
        self.client = httpx.Client(base_url=base, timeout=10)
        self.process = psutil.Process(pid)
        self.sent = 1  # the readiness probe
        self.rss: list[int] = []

    def run(self, seconds: float) -> list[float]:
        latencies: list[float] = []
        deadline = next_sample = time.monotonic()
        deadline += seconds
        while (now := time.monotonic()) < deadline:
            if now >= next_sample:
                self.rss.append(self.process.memory_info().rss)
                next_sample = now + 0.25
            started = time.perf_counter()
            response = self.client.get(f"/items/{self.sent % 100}")
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
            self.sent += 1
        return latencies


def percentiles(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_collector_outages(tmp_path: Path, protocol: str) -> None:
    receiver = OTLPReceiver(protocol)  # down at startup
    env = {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",  # a failed export gives up after ~1 s
    }

    def counted(request: Any) -> bool:
        return total_count(request, DURATION, **ITEMS) == load.sent

    phases: dict[str, list[float]] = {}
    with ExitStack() as stack:
        stack.callback(receiver.stop)
        process, base = stack.enter_context(app_process(tmp_path, env))
        load = Load(base, process.pid)
        stack.callback(load.client.close)
        phases["down at startup"] = load.run(4)
        receiver.start()
        phases["up"] = load.run(4)
        first = receiver.wait_for(counted)
        rss_before = max(load.rss[-8:])
        receiver.stop()
        phases["down mid-run (8 s)"] = load.run(8)
        rss_during = max(load.rss)
        receiver.start()
        phases["up again"] = load.run(4)
        last = receiver.wait_for(counted)
        terminate(process)
    log = (tmp_path / "app.log").read_text()

    # Cumulative counters continue without loss or reset: the last export has every request.
    assert total_count(last, DURATION, **ITEMS) == load.sent
    assert total_count(last, "shop.orders") == load.sent
    (first_point,) = points(first, DURATION).values()
    (last_point,) = points(last, DURATION).values()
    assert first_point.start_time_unix_nano == last_point.start_time_unix_nano
    assert resource(first)["service.instance.id"] == resource(last)["service.instance.id"]

    # One warning per outage, however many exports failed; nothing from the SDK's loggers.
    warnings = re.findall(r"^LOG (WARNING|ERROR) (\S+) (.*)$", log, re.MULTILINE)
    assert [(level, name) for level, name, _ in warnings] == [("WARNING", "otel_kit")] * 2
    assert all("cannot export metrics to" in message for _, _, message in warnings)
    recovered = [int(n) for n in re.findall(r"works again after (\d+) failed exports", log)]
    assert len(recovered) == 2 and all(n >= 2 for n in recovered)
    assert "Traceback" not in log

    # Memory stays bounded while exports fail (a generous bound: RSS jitters by a few MB).
    growth_mb = (rss_during - rss_before) / 2**20
    assert growth_mb < 32
    report = [f"\n{protocol}: {load.sent} requests; failed exports per outage: {recovered}"]
    for name, latencies in phases.items():
        p50, p99 = percentiles(latencies)
        report.append(f"  {name:20} n={len(latencies):5}  p50={p50:6.2f} ms  p99={p99:6.2f} ms")
        assert p99 < 500  # sanity only: an export blocking requests would take >= 1 s
    report.append(
        f"  RSS {rss_before / 2**20:.1f} MB before the outage, max {rss_during / 2**20:.1f} MB"
    )
    print("\n".join(report))


# uvicorn re-raises SIGTERM after its graceful shutdown, so the SDK's atexit flush never runs;
# otel-kit flushes when the app's lifespan ends (MetricsMiddleware).
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sigterm_flushes_the_last_interval(tmp_path: Path, protocol: str) -> None:
    with OTLPReceiver(protocol) as receiver:
        env = {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_METRIC_EXPORT_INTERVAL": "600000",  # the timer never fires in this test
        }
        with app_process(tmp_path, env) as (process, base), httpx.Client(base_url=base) as client:
            for item_id in range(1, 57):
                assert client.get(f"/items/{item_id}").status_code == 200
            assert receiver.requests() == []
            terminate(process)
        (request,) = receiver.requests()
    assert total_count(request, DURATION, **ITEMS) == 57  # 56 + the readiness probe
    assert total_count(request, "shop.orders") == 57


async def test_the_cardinality_limit_applies_to_pushed_metrics(make_handle: MakeHandle) -> None:
    with OTLPReceiver() as receiver:
        handle = make_handle(
            metrics_exporter="otlp",
            otlp_endpoint=receiver.endpoint,
            export_interval_ms=60_000,
            cardinality_limit=3,
        )
        tenants = handle.meter_provider.get_meter("t").create_counter("tenant.requests")
        for i in range(6):
            tenants.add(1, {"tenant": f"t{i}"})
        handle.shutdown()
    (request,) = receiver.requests()
    sent = points(request, "tenant.requests")
    assert len(sent) == 4  # 3 attribute sets, then one overflow point
    assert total_count(request, "tenant.requests", **{"otel.metric.overflow": True}) == 3
    assert total_count(request, "tenant.requests") == 6
