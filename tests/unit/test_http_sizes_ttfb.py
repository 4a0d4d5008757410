"""Opt-in HTTP server metrics: request and response body sizes (http_body_sizes) and the time to
the first response body byte (http_time_to_first_byte), in-process (httpx ASGI transport)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from otel_kit import MetricsHandle
from otel_kit._instrumentation.asgi import Message, MetricsMiddleware
from otel_kit._setup import wrap_built_stack
from tests.exposition import series, value
from tests.handles import MakeHandle

REQUEST = "http_server_request_body_size_bytes"
RESPONSE = "http_server_response_body_size_bytes"
TTFB = "otel_kit_http_server_time_to_first_byte_seconds"
DURATION = "http_server_request_duration_seconds"

UPLOAD = (b"a" * 100, b"b" * 2000, b"c" * 30000)  # 32100 bytes
DOWNLOAD = (b"x" * 10, b"y" * 500, b"z" * 5000)  # 5510 bytes
WAIT = 0.05  # before a streamed response's first chunk
GAP = 0.5  # between its first chunk and the rest


def make_app() -> tuple[Starlette, list[int]]:
    """The app, and the sizes of the request body chunks /upload read (one per message)."""
    chunks: list[int] = []

    async def upload(request: Request) -> StreamingResponse:
        async for chunk in request.stream():
            if chunk:
                chunks.append(len(chunk))

        async def body() -> AsyncIterator[bytes]:
            for chunk in DOWNLOAD:
                yield chunk

        return StreamingResponse(body())

    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")  # 5 bytes

    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    async def refuse(request: Request) -> Response:
        return Response("no", status_code=401)  # the body is never read

    async def boom(request: Request) -> Response:
        await request.body()
        raise ValueError("broken")

    async def slow_start(request: Request) -> StreamingResponse:
        ready = asyncio.Event()
        asyncio.get_running_loop().call_later(WAIT, ready.set)

        async def body() -> AsyncIterator[bytes]:
            await ready.wait()  # the first byte cannot leave before WAIT
            yield b"first"
            await asyncio.sleep(GAP)
            yield b"second"
            yield b"third"

        return StreamingResponse(body())

    routes = [
        Route("/upload", upload, methods=["POST"]),
        Route("/page", page),
        Route("/empty", empty),
        Route("/refuse", refuse, methods=["POST"]),
        Route("/boom", boom, methods=["POST"]),
        Route("/slow-start", slow_start),
    ]
    return Starlette(routes=routes), chunks


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def streamed(parts: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def buckets(text: str, name: str, route: str) -> dict[str, float]:
    """{le: cumulative count} of one route's histogram."""
    return {
        labels["le"]: value(text, f"{name}_bucket", **labels)
        for labels in series(text, f"{name}_bucket")
        if labels.get("http_route") == route
    }


def render(handle: MetricsHandle) -> str:
    return handle.render().decode()


async def test_streamed_upload_and_response_are_counted_chunk_by_chunk(
    make_handle: MakeHandle,
) -> None:
    app, chunks = make_app()
    handle = make_handle(app, http_body_sizes=True)
    async with client(app) as c:
        response = await c.post("/upload", content=streamed(UPLOAD))
    assert response.content == b"".join(DOWNLOAD)
    assert chunks == [100, 2000, 30000]  # the app still got the body as it came: not buffered
    text = render(handle)

    labels = {"http_route": "/upload", "http_request_method": "POST"}
    assert value(text, f"{REQUEST}_sum", **labels) == 32100
    assert value(text, f"{REQUEST}_count", **labels) == 1
    assert buckets(text, REQUEST, "/upload") == {
        "0.0": 0, "64.0": 0, "256.0": 0, "1024.0": 0, "4096.0": 0, "16384.0": 0,
        "65536.0": 1, "262144.0": 1, "1.048576e+06": 1, "4.194304e+06": 1,
        "1.6777216e+07": 1, "6.7108864e+07": 1, "+Inf": 1,
    }  # fmt: skip
    assert value(text, f"{RESPONSE}_sum", **labels) == 5510
    response_buckets = buckets(text, RESPONSE, "/upload")
    assert (response_buckets["4096.0"], response_buckets["16384.0"]) == (0, 1)
    # the labels of the duration, status included
    assert series(text, f"{RESPONSE}_count") == [
        {
            "http_request_method": "POST",
            "http_route": "/upload",
            "http_response_status_code": "200",
            "url_scheme": "http",
            "network_protocol_version": "1.1",
        }
    ]
    assert TTFB not in text  # its own switch


async def test_head_and_empty_bodies_are_zero_bytes(make_handle: MakeHandle) -> None:
    app, _ = make_app()
    handle = make_handle(app, http_body_sizes=True)
    async with client(app) as c:
        assert (await c.get("/page")).text == "hello"
        head = await c.head("/page")
        assert (head.status_code, head.headers["content-length"]) == (200, "5")
        assert (await c.get("/empty")).status_code == 204
    text = render(handle)

    # HEAD: the app sends the GET's body, the server drops it: nothing is transferred
    get = {"http_route": "/page", "http_request_method": "GET"}
    assert (value(text, f"{RESPONSE}_sum", **get), value(text, f"{RESPONSE}_count", **get)) == (
        5,
        1,
    )
    head_labels = {"http_route": "/page", "http_request_method": "HEAD"}
    assert value(text, f"{RESPONSE}_count", **head_labels) == 1
    assert value(text, f"{RESPONSE}_sum", **head_labels) == 0
    assert value(text, f"{RESPONSE}_bucket", le="0.0", **head_labels) == 1
    assert value(text, f"{RESPONSE}_bucket", le="0.0", http_route="/empty") == 1
    # no request body anywhere: every request in the 0 bucket
    assert value(text, f"{REQUEST}_count") == 3
    assert value(text, f"{REQUEST}_bucket", le="0.0") == 3
    assert value(text, f"{REQUEST}_sum") == 0


async def test_a_body_the_app_did_not_read_counts_its_content_length(
    make_handle: MakeHandle,
) -> None:
    app, _ = make_app()
    handle = make_handle(app, http_body_sizes=True)
    async with client(app) as c:
        assert (await c.post("/refuse", content=b"q" * 5000)).status_code == 401
    text = render(handle)
    assert value(text, f"{REQUEST}_sum", http_route="/refuse") == 5000
    assert value(text, f"{RESPONSE}_sum", http_route="/refuse") == 2


@pytest.mark.parametrize("built", [False, True], ids=["setup before start", "around built stack"])
async def test_an_exception_before_the_response_records_no_response_size(
    make_handle: MakeHandle, built: bool
) -> None:
    """Before start, Starlette's error middleware is outside otel-kit's and sends its 500 after
    the exception went by; around the built stack (`otel-kit run`) the 500 comes through
    otel-kit's first. Either way the app sent no response: the same records."""
    app, _ = make_app()
    options = {"http_body_sizes": True, "http_time_to_first_byte": True}
    if built:
        handle = make_handle(**options)
        app.middleware_stack = wrap_built_stack(handle, app, app.build_middleware_stack())
    else:
        handle = make_handle(app, **options)
    async with client(app) as c:
        assert (await c.post("/boom", content=b"q" * 300)).status_code == 500
    text = render(handle)
    assert series(text, f"{REQUEST}_count") == [
        {
            "http_request_method": "POST",
            "http_route": "/boom",
            "http_response_status_code": "500",
            "error_type": "ValueError",
            "url_scheme": "http",
            "network_protocol_version": "1.1",
        }
    ]
    assert value(text, f"{REQUEST}_sum") == 300
    # no response went through otel-kit (Starlette's error middleware, outside, sent the 500)
    assert RESPONSE not in text
    assert TTFB not in text


async def test_time_to_first_byte_is_the_wait_before_the_first_chunk(
    make_handle: MakeHandle,
) -> None:
    app, _ = make_app()
    # Bounds at WAIT and WAIT + GAP: the first byte leaves after WAIT (structurally) and long
    # before WAIT + GAP; the whole response ends after WAIT + GAP (structurally).
    bounds = [WAIT, WAIT + GAP, 30.0]
    handle = make_handle(app, http_time_to_first_byte=True, duration_buckets=bounds)
    async with client(app) as c:
        assert (await c.get("/slow-start")).content == b"firstsecondthird"
        assert (await c.get("/empty")).status_code == 204  # no body byte: no first byte
    text = render(handle)

    assert buckets(text, TTFB, "/slow-start") == {"0.05": 0, "0.55": 1, "30.0": 1, "+Inf": 1}
    assert buckets(text, DURATION, "/slow-start") == {"0.05": 0, "0.55": 0, "30.0": 1, "+Inf": 1}
    first_byte = value(text, f"{TTFB}_sum")
    assert WAIT <= first_byte < value(text, f"{DURATION}_sum", http_route="/slow-start")
    assert series(text, f"{TTFB}_count") == [
        {
            "http_request_method": "GET",
            "http_route": "/slow-start",
            "http_response_status_code": "200",
        }
    ]
    assert REQUEST not in text and RESPONSE not in text  # their own switch


async def test_off_by_default_no_series_and_no_detour(make_handle: MakeHandle) -> None:
    app, chunks = make_app()
    handle = make_handle(app)
    async with client(app) as c:
        await c.post("/upload", content=streamed(UPLOAD))
        await c.get("/slow-start")
        text = (await c.get("/metrics")).text
    assert chunks == [100, 2000, 30000]
    assert value(text, f"{DURATION}_count") == 2
    for name in ("body_size", "time_to_first_byte"):
        assert name not in text
        assert name not in render(handle)
    middleware: Any = app.middleware_stack
    while not isinstance(middleware, MetricsMiddleware):  # Starlette's error middleware first
        middleware = middleware.app
    assert middleware._tally is False


async def test_switched_on_by_environment(
    make_handle: MakeHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_KIT_HTTP_BODY_SIZES", "TRUE")
    monkeypatch.setenv("OTEL_KIT_HTTP_TIME_TO_FIRST_BYTE", "true")
    app, _ = make_app()
    handle = make_handle(app)
    async with client(app) as c:
        await c.get("/page")
    text = render(handle)
    assert value(text, f"{RESPONSE}_sum", http_route="/page") == 5
    assert value(text, f"{TTFB}_count", http_route="/page") == 1


async def test_pathsend_counts_the_files_content_length(make_handle: MakeHandle) -> None:
    """A server with the pathsend extension sends the file itself: its Content-Length is the
    body size, and handing the file over is the first byte."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"70000"), (b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": "/srv/file.txt"})

    handle = make_handle(http_body_sizes=True, http_time_to_first_byte=True)
    wrapped = handle.instrument_app(app)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/file", "headers": [], "root_path": ""}
    await wrapped(scope, receive, send)
    assert [message["type"] for message in sent] == [
        "http.response.start",
        "http.response.pathsend",
    ]
    text = render(handle)
    assert value(text, f"{RESPONSE}_sum") == 70000
    assert value(text, f"{RESPONSE}_bucket", le="65536.0") == 0
    assert value(text, f"{RESPONSE}_bucket", le="262144.0") == 1
    assert value(text, f"{TTFB}_count") == 1


async def test_odd_messages_pass_through_unchanged(make_handle: MakeHandle) -> None:
    """A body that is not bytes-like, a message without a type: the app's and the server's
    business, passed on as they are; the request is still measured."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"no": "type"})
        await send({"type": "http.response.body", "body": 12345})  # len() fails

    handle = make_handle(http_body_sizes=True)
    wrapped = handle.instrument_app(app)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": None, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "root_path": ""}
    await wrapped(scope, receive, send)
    assert sent[1:] == [{"no": "type"}, {"type": "http.response.body", "body": 12345}]
    assert value(render(handle), f"{DURATION}_count") == 1
