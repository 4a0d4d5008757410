"""HTTP server metrics through the app's own /metrics, in-process (httpx ASGI transport). On
the separate metrics port: tests/integration/test_http_server.py."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import metrics
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from otel_kit import _support, setup_metrics
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.http_app import client, make_app

COUNT = "http_server_request_duration_seconds_count"
BUCKET = "http_server_request_duration_seconds_bucket"


async def scrape(c: httpx.AsyncClient) -> str:
    response = await c.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_counts_per_route_template_and_status(make_handle: MakeHandle) -> None:
    app = make_app()
    make_handle(app)
    async with client(app) as c:
        for i in range(5):
            assert (await c.get(f"/items/{i}")).status_code == 200
        await c.post("/items")
        await c.get("/api/users/7")
        await c.get("/api/v1/things/9")
        await c.get("/api/v1/things/10")
        await c.get("/sub/hello/bob")
        await c.get("/missing")
        text = await scrape(c)

    def count(route: str, method: str = "GET", status: str = "200") -> float:
        return value(
            text,
            COUNT,
            http_route=route,
            http_request_method=method,
            http_response_status_code=status,
        )

    assert count("/items/{item_id}") == 5
    assert count("/items", "POST") == 1
    assert count("/api/users/{user_id}") == 1
    assert count("/api/v1/things/{thing_id}") == 2
    assert count("/sub/hello/{name}") == 1
    assert count("/missing", status="404") == 1
    routes = {labels.get("http_route") for labels in series(text, COUNT)}
    assert routes == {
        "/items/{item_id}",
        "/items",
        "/api/users/{user_id}",
        "/api/v1/things/{thing_id}",
        "/sub/hello/{name}",
        "/missing",
    }
    # one observation per request: FastAPI's own request metrics are switched off
    assert value(text, COUNT) == 11
    assert {s["otel_scope_name"] for s in series(text, COUNT, scope=True)} == {"otel_kit"}


async def test_unmatched_paths_have_no_route_label(make_handle: MakeHandle) -> None:
    app = make_app()
    make_handle(app)
    async with client(app) as c:
        for i in range(50):
            assert (await c.get(f"/nope/{i}?q={i}")).status_code == 404
        text = await scrape(c)
    unmatched = [s for s in series(text, COUNT) if s["http_response_status_code"] == "404"]
    assert unmatched == [
        {
            "http_request_method": "GET",
            "http_response_status_code": "404",
            "url_scheme": "http",
            "network_protocol_version": "1.1",
        }
    ]
    assert value(text, COUNT, http_response_status_code="404") == 50
    assert "/nope" not in text


async def test_exceptions_and_5xx_carry_error_type(make_handle: MakeHandle) -> None:
    app = make_app()
    make_handle(app)
    async with client(app) as c:
        assert (await c.get("/boom")).status_code == 500
        assert (await c.get("/boom")).status_code == 500
        assert (await c.get("/unavailable")).status_code == 503
        assert (await c.get("/items/1")).status_code == 200
        text = await scrape(c)
    assert value(text, COUNT, http_route="/boom", http_response_status_code="500") == 2
    assert value(text, COUNT, http_route="/boom", error_type="ValueError") == 2
    assert value(text, COUNT, http_route="/unavailable", error_type="503") == 1
    ok = [s for s in series(text, COUNT) if s.get("http_route") == "/items/{item_id}"]
    assert ok == [
        {
            "http_request_method": "GET",
            "http_route": "/items/{item_id}",
            "http_response_status_code": "200",
            "url_scheme": "http",
            "network_protocol_version": "1.1",
        }
    ]


async def test_bucket_placement_uses_configured_boundaries(make_handle: MakeHandle) -> None:
    app = make_app()
    make_handle(app, duration_buckets=[0.05, 0.15, 10])
    async with client(app) as c:
        await c.get("/items/1")
        await c.get("/slow")
        await c.get("/stream")  # three chunks 0.1 s apart: timed until the body completes
        text = await scrape(c)

    def placed(route: str) -> list[float]:
        return [
            value(text, BUCKET, http_route=route, le=le) for le in ("0.05", "0.15", "10.0", "+Inf")
        ]

    def expected(route: str) -> list[float]:
        """Where the route's one request belongs by its own duration (its series' sum): on a
        busy machine even /items may take longer than 50 ms."""
        took = value(text, "http_server_request_duration_seconds_sum", http_route=route)
        return [float(took <= bound) for bound in (0.05, 0.15, 10)] + [1.0]

    assert value(text, "http_server_request_duration_seconds_sum", http_route="/slow") >= 0.1
    assert value(text, "http_server_request_duration_seconds_sum", http_route="/stream") >= 0.3
    for route in ("/items/{item_id}", "/slow", "/stream"):
        assert placed(route) == expected(route), route
    assert placed("/stream")[:2] == [0, 0]  # timed until the body completes, not the head


async def test_metrics_endpoint_and_excluded_urls_are_not_counted(make_handle: MakeHandle) -> None:
    app = make_app()
    make_handle(app, excluded_urls="^/healthz$,^/sub/")
    async with client(app) as c:
        for _ in range(3):
            await c.get("/healthz")
            await c.get("/sub/hello/x")
            await c.get("/metrics")
        await c.get("/items/1")
        text = await scrape(c)
    assert value(text, COUNT) == 1
    assert {s.get("http_route") for s in series(text, COUNT)} == {"/items/{item_id}"}


async def test_unknown_methods_become_other(make_handle: MakeHandle) -> None:
    app = make_app()
    make_handle(app)
    async with client(app) as c:
        for method in ("FOO", "BAR", "PURGE"):
            await c.request(method, "/items/1")
        await c.get("/items/1")
        text = await scrape(c)
    methods = {s["http_request_method"] for s in series(text, COUNT)}
    assert methods == {"_OTHER", "GET"}
    assert value(text, COUNT, http_request_method="_OTHER") == 3


async def test_active_requests_rise_during_a_request_and_fall_after(
    make_handle: MakeHandle,
) -> None:
    app = make_app()
    started, release = asyncio.Event(), asyncio.Event()

    @app.get("/held")
    async def held() -> dict[str, str]:  # in progress until the test has scraped
        started.set()
        await release.wait()
        return {"ok": "yes"}

    make_handle(app)
    async with client(app) as c:
        request = asyncio.create_task(c.get("/held"))
        await asyncio.wait_for(started.wait(), 10)
        during = await scrape(c)
        release.set()
        assert (await request).status_code == 200
        after = await scrape(c)
    assert value(during, "http_server_active_requests", http_request_method="GET") == 1
    assert value(after, "http_server_active_requests", http_request_method="GET") == 0


@pytest.mark.usefixtures("global_metrics")
async def test_setup_is_idempotent() -> None:
    app = make_app()
    first = setup_metrics(app)
    second = setup_metrics(app)
    assert first is second
    async with client(app) as c:
        await c.get("/items/1")
        text = await scrape(c)
    assert value(text, COUNT) == 1


@pytest.mark.usefixtures("global_metrics")
async def test_custom_business_metrics_share_the_endpoint() -> None:
    app = make_app()
    setup_metrics(app, service_name="shop", service_version="1.2.3")
    meter = metrics.get_meter("shop")
    orders = meter.create_counter("orders.created", unit="{order}")
    totals = meter.create_histogram(
        "order.total", unit="dollars", explicit_bucket_boundaries_advisory=[10, 100, 1000]
    )
    users = meter.create_up_down_counter("active.users", unit="{user}")
    temperature = meter.create_gauge("room.temperature", unit="Cel")
    orders.add(2, {"payment_method": "card"})
    orders.add(1, {"payment_method": "paypal"})
    for total in (5, 50, 500, 5000):
        totals.record(total)
    users.add(3)
    users.add(-1)
    temperature.set(21.5)
    async with client(app) as c:
        text = await scrape(c)
    assert value(text, "orders_created_total", payment_method="card") == 2
    assert value(text, "orders_created_total", payment_method="paypal") == 1
    assert [
        value(text, "order_total_dollars_bucket", le=le) for le in ("10.0", "100.0", "+Inf")
    ] == [
        1,
        2,
        4,
    ]
    assert value(text, "order_total_dollars_sum") == 5555
    assert value(text, "active_users") == 2
    assert value(text, "room_temperature_celsius") == 21.5
    assert value(text, "target_info", service_name="shop", service_version="1.2.3") == 1


async def test_openmetrics_by_content_negotiation(make_handle: MakeHandle) -> None:
    app = make_app()
    make_handle(app)
    async with client(app) as c:
        await c.get("/items/1")
        plain = await c.get("/metrics")
        om = await c.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    assert "# UNIT http_server_request_duration_seconds seconds" in om.text


async def test_cardinality_limit_adds_an_overflow_series(make_handle: MakeHandle) -> None:
    app = FastAPI()
    for i in range(5):
        app.add_api_route(f"/r{i}", lambda: {"ok": True}, methods=["GET"])
    make_handle(app, cardinality_limit=3)
    async with client(app) as c:
        for i in range(5):
            await c.get(f"/r{i}")
        text = await scrape(c)
    assert len(series(text, COUNT)) == 4
    assert value(text, COUNT, otel_metric_overflow="true") == 2
    assert value(text, COUNT) == 5


async def test_plain_starlette_routes_and_mounts(make_handle: MakeHandle) -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    async def x(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x")

    inner = Starlette(routes=[Route("/x/{y}", x)])
    app = Starlette(routes=[Route("/hello/{name}", hello), Mount("/t/{tenant}", app=inner)])
    make_handle(app)
    async with client(app) as c:
        await c.get("/hello/a")
        await c.get("/t/acme/x/1")
        await c.get("/t/other/x/2")
        text = await scrape(c)
    assert value(text, COUNT, http_route="/hello/{name}") == 1
    assert value(text, COUNT, http_route="/t/{tenant}/x/{y}") == 2


async def test_an_endpoint_shared_by_several_routes_gets_each_route_template(
    make_handle: MakeHandle,
) -> None:
    """Starlette before 1.0 tells the middleware only the endpoint, not the route: with one
    endpoint behind several routes (and mounts), the request's own route must be found."""

    async def shared(request: Request) -> PlainTextResponse:
        request.scope.pop("route", None)  # as Starlette < 1.0 leaves the scope
        return PlainTextResponse("ok")

    def routes() -> list[Route]:
        return [Route("/a/{id}", shared), Route("/b", shared)]

    app = Starlette(
        routes=[
            *routes(),
            Mount("/m1", routes=routes()),
            Mount("/m2/{t}", app=Starlette(routes=routes())),
        ]
    )
    make_handle(app)
    async with client(app) as c:
        for path in ("/a/1", "/b", "/b", "/m1/a/2", "/m1/b", "/m2/x/a/3", "/m2/y/b", "/m2/z/b"):
            assert (await c.get(path)).status_code == 200
        text = await scrape(c)
    counts = {
        labels.get("http_route"): value(text, COUNT, **labels) for labels in series(text, COUNT)
    }
    assert counts == {
        "/a/{id}": 1,
        "/b": 2,
        "/m1/a/{id}": 1,
        "/m1/b": 1,
        "/m2/{t}/a/{id}": 1,
        "/m2/{t}/b": 2,
    }


async def test_other_asgi_apps_are_wrapped(make_handle: MakeHandle) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with pytest.raises(TypeError, match="instrument_app"):
        setup_metrics(raw)
    handle = make_handle()
    try:
        wrapped = handle.instrument_app(raw)
        async with client(wrapped) as c:
            assert (await c.get("/anything")).status_code == 204
        text = handle.render().decode()
        assert value(text, COUNT, http_response_status_code="204") == 1
    finally:
        handle.shutdown()


async def test_a_failing_metrics_layer_never_reaches_the_app(
    make_handle: MakeHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    handle = make_handle(app)

    def broken(*args: Any) -> None:
        raise RuntimeError("metrics bug")

    monkeypatch.setattr(handle._http_duration, "record", broken)
    monkeypatch.setattr(_support, "_failures", _support.LogOnce())
    async with client(app) as c:
        responses = [await c.get(f"/items/{i}") for i in range(3)]
    assert [r.json() for r in responses] == [{"id": 0}, {"id": 1}, {"id": 2}]
    failures = [r for r in caplog.records if "recording HTTP server metrics failed" in r.message]
    assert len(failures) == 1  # logged once, not per request


@pytest.mark.usefixtures("global_metrics")
async def test_disabled_http_instrumentation_still_serves_metrics() -> None:
    pytest.importorskip("fastapi.telemetry", reason="FastAPI < 0.165 records no metrics itself")
    app = make_app()
    setup_metrics(app, disabled_instrumentations="fastapi")
    meter = metrics.get_meter("t")
    meter.create_counter("jobs").add(4)
    async with client(app) as c:
        assert (await c.get("/items/1")).json() == {"id": 1}
        text = await scrape(c)
    assert value(text, "jobs_total") == 4
    # otel-kit leaves the app alone: what remains is FastAPI's own recording (it adds url_scheme)
    remaining = series(text, COUNT)
    assert remaining
    assert all(s.get("url_scheme") == "http" for s in remaining)
