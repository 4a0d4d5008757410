"""Faults from the application's side (issue 20): an ASGI server's odd response status, very
long outbound host names, an app route the metrics endpoint hides."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from otel_kit._instrumentation._context import MAX_HOST_LENGTH, OVERLONG_HOST
from otel_kit._instrumentation.asgi import Message, MetricsMiddleware, Receive, Scope, Send
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.http_app import client
from tests.integration.processes import http_server

COUNT = "http_server_request_duration_seconds_count"
ACTIVE = "http_server_active_requests"
CLIENT_COUNT = "http_client_request_duration_seconds_count"


def raw_app(*messages: Message, fail: bool = False) -> Any:
    """A hand-written ASGI app that sends `messages` as they are, then raises if `fail`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in messages:
            await send(message)
        if fail:
            raise RuntimeError("app failed")

    return app


async def serve(middleware: Any) -> list[Message]:
    """One GET /x through `middleware`, as a server would drive it: the messages it sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "GET", "path": "/x", "root_path": "", "headers": []}
    await middleware(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    ("status", "label"),
    [
        ("200", "200"),  # a digit string is read as the status it spells
        (HTTPStatus.ACCEPTED, "202"),  # an int subclass: its value
        (None, None),  # anything else: no status label
        ("OK", None),
        ("2000", None),
        (b"200", None),
        (200.0, None),
        (True, None),
    ],
)
async def test_an_odd_status_passes_through_and_is_counted(
    make_handle: MakeHandle, status: object, label: str | None
) -> None:
    start = {"type": "http.response.start", "status": status, "headers": []}
    body = {"type": "http.response.body", "body": b"ok"}
    handle = make_handle()
    middleware = handle.instrument_app(raw_app(start, body))
    assert isinstance(middleware, MetricsMiddleware)

    sent = await serve(middleware)

    assert len(sent) == 2 and sent[0] is start and sent[1] is body
    assert start["status"] is status  # unchanged for the server
    text = handle.render().decode()
    [labels] = series(text, COUNT)
    assert labels.get("http_response_status_code") == label
    assert "error_type" not in labels
    assert value(text, COUNT) == 1
    assert value(text, ACTIVE, http_request_method="GET") == 0


async def test_a_5xx_digit_string_is_an_error(make_handle: MakeHandle) -> None:
    start = {"type": "http.response.start", "status": "503"}
    handle = make_handle()
    sent = await serve(handle.instrument_app(raw_app(start, {"type": "http.response.body"})))
    assert len(sent) == 2
    text = handle.render().decode()
    assert value(text, COUNT, http_response_status_code="503", error_type="503") == 1
    assert value(text, ACTIVE) == 0


async def test_messages_without_type_or_status_pass_through(make_handle: MakeHandle) -> None:
    odd: list[Message] = [
        {"status": 200},  # no type
        {"type": "http.response.start"},  # no status
        {"type": "http.response.body", "body": b"ok"},
    ]
    handle = make_handle()
    sent = await serve(handle.instrument_app(raw_app(*odd)))
    assert sent == odd and all(a is b for a, b in zip(sent, odd, strict=True))
    text = handle.render().decode()
    [labels] = series(text, COUNT)
    assert "http_response_status_code" not in labels
    assert value(text, COUNT) == 1
    assert value(text, ACTIVE) == 0


async def test_an_app_failing_after_an_odd_status_keeps_its_exception(
    make_handle: MakeHandle,
) -> None:
    start = {"type": "http.response.start", "status": "not a status"}
    handle = make_handle()
    with pytest.raises(RuntimeError, match="app failed"):
        await serve(handle.instrument_app(raw_app(start, fail=True)))
    text = handle.render().decode()
    [labels] = series(text, COUNT)
    assert labels.get("error_type") == "RuntimeError"
    assert "http_response_status_code" not in labels
    assert value(text, ACTIVE) == 0


class Proxy(BaseHTTPRequestHandler):
    """A loopback HTTP proxy that answers every request itself: 200 "ok"."""

    protocol_version = "HTTP/1.1"
    timeout = 10

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    with http_server(Proxy) as url:
        yield url


def dns_name(length: int) -> str:
    """A host name of `length` characters, in DNS labels of at most 63."""
    labels, rest = [], length
    while rest > 0:
        label = min(63, rest)
        labels.append("a" * (label - 1 if rest > label else label))
        rest -= label
    name = ".".join(labels)
    assert len(name) == length
    return name


@pytest.mark.parametrize(
    ("length", "label"),
    [(MAX_HOST_LENGTH, "kept"), (MAX_HOST_LENGTH + 1, OVERLONG_HOST), (20_000, OVERLONG_HOST)],
)
def test_an_overlong_host_gets_a_bounded_label(
    make_handle: MakeHandle, proxy: str, length: int, label: str
) -> None:
    host = dns_name(length)
    handle = make_handle(peer_services=f"{host}=long")
    # The proxy on loopback answers for any host: no name is ever resolved.
    with httpx.Client(proxy=proxy) as http:
        for _ in range(2):
            assert http.get(f"http://{host}/path").text == "ok"
    text = handle.render().decode()
    [labels] = series(text, CLIENT_COUNT)
    assert labels["server_address"] == (host if label == "kept" else OVERLONG_HOST)
    assert labels.get("service_peer_name") == ("long" if label == "kept" else None)
    assert value(text, CLIENT_COUNT) == 2
    assert max(len(line) for line in text.splitlines()) < MAX_HOST_LENGTH + 400


def metrics_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "otel_kit" and r.levelno == logging.WARNING and "hides" in r.getMessage()
    ]


async def fetch(app: Any, path: str) -> httpx.Response:
    async with client(app) as c:
        return await c.get(path)


@pytest.mark.parametrize("routes_added", ["before setup", "after setup", "before the app started"])
async def test_an_app_route_at_the_metrics_path_is_reported(
    make_handle: MakeHandle, caplog: pytest.LogCaptureFixture, routes_added: str
) -> None:
    app = FastAPI()

    def add_route() -> None:
        @app.get("/metrics")
        async def own_metrics() -> str:
            return "app's own"

    if routes_added != "after setup":
        add_route()
    if routes_added == "before the app started":  # setup wraps the middleware stack built
        assert (await fetch(app, "/metrics")).text == '"app\'s own"'
    make_handle(app)
    if routes_added == "after setup":
        add_route()
    with caplog.at_level(logging.WARNING, logger="otel_kit"):
        for _ in range(3):
            response = await fetch(app, "/metrics")
            assert response.status_code == 200
            assert "app's own" not in response.text  # otel-kit's endpoint serves it
    [warning] = metrics_warnings(caplog)
    assert "/metrics" in warning
    assert "metrics_path" in warning and "OTEL_KIT_METRICS_PATH" in warning


async def test_a_mount_at_the_metrics_path_is_reported(
    make_handle: MakeHandle, caplog: pytest.LogCaptureFixture
) -> None:
    # prometheus_client's own endpoint, mounted as its documentation shows, under a prefix
    inner = Starlette(routes=[Mount("/prom", app=make_asgi_app())])
    app = Starlette(routes=[Mount("/ops", app=inner)])
    make_handle(app, metrics_path="/ops/prom")
    with caplog.at_level(logging.WARNING, logger="otel_kit"):
        assert (await fetch(app, "/ops/prom")).status_code == 200
    [warning] = metrics_warnings(caplog)
    assert "/ops/prom" in warning


async def test_no_report_without_a_collision(
    make_handle: MakeHandle, caplog: pytest.LogCaptureFixture
) -> None:
    served_here = FastAPI()  # near misses: another path, a trailing slash, a path parameter
    for path in ("/stats", "/metrics/", "/{anything}"):
        served_here.add_api_route(path, lambda: "page")
    make_handle(served_here)

    async def page(request: Any) -> PlainTextResponse:
        return PlainTextResponse("page")

    # Metrics on their own port: the app's /metrics is not hidden.
    on_port = Starlette(routes=[Route("/metrics", page)])
    make_handle(on_port, prometheus_port=0, prometheus_host="127.0.0.1")
    with caplog.at_level(logging.WARNING, logger="otel_kit"):
        assert (await fetch(served_here, "/metrics")).status_code == 200
        assert (await fetch(on_port, "/metrics")).text == "page"
    assert metrics_warnings(caplog) == []
