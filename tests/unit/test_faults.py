"""Faults in-process: WebSocket routes, `setup_metrics()` from many threads at once, and a
scrape that fails. The application's own answers stay the same in each case."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

import otel_kit._setup
from otel_kit import catalogue, setup_metrics
from otel_kit._instrumentation.asgi import MetricsMiddleware
from otel_kit._instruments import FastInstruments
from tests.exposition import series, value
from tests.handles import MakeHandle

COUNT = "http_server_request_duration_seconds_count"
ACTIVE = "http_server_active_requests"


def ws_app() -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws/{room}")
    async def echo(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(f"{room}: {await websocket.receive_text()}")
        except WebSocketDisconnect:
            pass

    @app.websocket("/private")
    async def private(websocket: WebSocket) -> None:
        await websocket.close(code=1008)  # refused before accept: an HTTP 403 to the client

    @app.websocket("/broken")
    async def broken(websocket: WebSocket) -> None:
        await websocket.accept()
        raise ValueError("handler bug")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


class WebSocketClient:
    """A WebSocket client speaking ASGI to the app directly (the in-process counterpart of
    httpx's ASGI transport, which has no WebSockets)."""

    def __init__(self, app: Any, path: str) -> None:
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"t")],
            "client": ("127.0.0.1", 50000),
            "server": ("t", 80),
            "subprotocols": [],
        }
        self.task = asyncio.create_task(app(scope, self._to_app.get, self._from_app.put))
        self._to_app.put_nowait({"type": "websocket.connect"})

    async def receive(self) -> dict[str, Any]:
        return await asyncio.wait_for(self._from_app.get(), timeout=5)

    async def send_text(self, text: str) -> None:
        await self._to_app.put({"type": "websocket.receive", "text": text})

    async def close(self) -> None:
        await self._to_app.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, timeout=5)


async def test_websockets_work_and_are_not_http_requests(make_handle: MakeHandle) -> None:
    """A WebSocket connection is not an HTTP request (`http.server.*` is about requests): it
    is neither counted nor active, and every message gets through unchanged."""
    app = ws_app()
    make_handle(app)
    async with client(app) as http:
        ws = WebSocketClient(app, "/ws/lobby")
        assert await ws.receive() == {
            "type": "websocket.accept",
            "subprotocol": None,
            "headers": [],
        }
        for i in range(20):
            await ws.send_text(f"hello {i}")
            assert await ws.receive() == {"type": "websocket.send", "text": f"lobby: hello {i}"}
        # An HTTP request and a scrape while the socket is open.
        assert (await http.get("/items/3")).json() == {"id": 3}
        during = (await http.get("/metrics")).text
        await ws.close()

        refused = WebSocketClient(app, "/private")  # closed before accept: 403 to the client
        assert await refused.receive() == {"type": "websocket.close", "code": 1008, "reason": ""}
        await refused.task
        broken = WebSocketClient(app, "/broken")  # the server closes it with 1011
        assert (await broken.receive())["type"] == "websocket.accept"
        with pytest.raises(ValueError, match="handler bug"):
            await broken.task

        again = WebSocketClient(app, "/ws/again")  # the app goes on
        assert (await again.receive())["type"] == "websocket.accept"
        await again.send_text("x")
        assert (await again.receive())["text"] == "again: x"
        await again.close()
        after = (await http.get("/metrics")).text

    assert value(during, ACTIVE) == 0  # the open WebSocket is not an active request
    assert value(during, COUNT) == 1
    assert series(after, COUNT) == [
        {
            "http_request_method": "GET",
            "http_response_status_code": "200",
            "url_scheme": "http",
            "network_protocol_version": "1.1",
            "http_route": "/items/{item_id}",
        }
    ]
    assert value(after, ACTIVE) == 0


# -- setup_metrics() from several threads at once ---------------------------------------------


@pytest.mark.usefixtures("global_metrics")
async def test_setup_from_many_threads_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """16 threads released together: 8 on one app, 8 on their own apps. One handle, one
    provider set globally, one middleware per app, every request counted once, no warning.

    The window between "is this app instrumented?" and "instrument it" is widened (FastAPI's
    metrics switch-off, which runs inside it, waits 20 ms) so that a missing lock shows every
    time, not once in a few hundred runs."""
    original = otel_kit._setup.disable_fastapi_metrics

    def slow_disable(app: Any) -> None:
        time.sleep(0.02)
        original(app)

    monkeypatch.setattr(otel_kit._setup, "disable_fastapi_metrics", slow_disable)
    shared = ws_app()
    apps = [shared] * 8 + [ws_app() for _ in range(8)]
    barrier = threading.Barrier(len(apps))

    def setup(app: FastAPI) -> otel_kit.MetricsHandle:
        barrier.wait(timeout=10)
        return setup_metrics(app)

    with ThreadPoolExecutor(len(apps)) as pool:
        handles = list(pool.map(setup, apps))  # re-raises whatever a thread raised

    (handle,) = set(handles)
    assert metrics.get_meter_provider() is handle.meter_provider
    for app in {id(app): app for app in apps}.values():
        middleware = [m for m in app.user_middleware if m.cls is MetricsMiddleware]
        assert len(middleware) == 1
    for i, app in enumerate(apps[7:]):  # the shared app once, then each own app
        async with client(app) as http:
            assert (await http.get(f"/items/{i}")).json() == {"id": i}
    text = handle.render().decode()
    assert value(text, COUNT, http_route="/items/{item_id}") == 9
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- a scrape that fails -----------------------------------------------------------------------


@pytest.mark.usefixtures("global_metrics")
async def test_a_failing_scrape_leaves_the_app_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """An observable callback of the app's that raises costs only its own series; otel-kit's
    exposition failing makes that one scrape a 500, the app's routes answer as before and the
    next scrape works again and has counted every request."""
    app = ws_app()
    handle = setup_metrics(app)
    meter = metrics.get_meter("app")

    def queue_depth(options: CallbackOptions) -> list[Observation]:
        raise RuntimeError("queue unreachable")

    meter.create_observable_gauge("queue.depth", callbacks=[queue_depth])
    meter.create_counter("jobs").add(3)

    async with client(app) as http:
        assert (await http.get("/items/1")).json() == {"id": 1}
        first = await http.get("/metrics")
        assert first.status_code == 200
        assert value(first.text, "jobs_total") == 3
        assert value(first.text, COUNT) == 1
        assert "queue_depth" not in first.text

        broken = handle._pipeline.fast.merge

        def failing(*args: Any) -> Any:
            raise RuntimeError("exposition bug")

        monkeypatch.setattr(handle._pipeline.fast, "merge", failing)
        assert (await http.get("/metrics")).status_code == 500
        assert (await http.get("/items/2")).json() == {"id": 2}
        monkeypatch.setattr(handle._pipeline.fast, "merge", broken)

        again = await http.get("/metrics")
        assert again.status_code == 200
        assert value(again.text, COUNT, http_route="/items/{item_id}") == 2
        assert value(again.text, ACTIVE) == 0
        assert value(again.text, "jobs_total") == 3


def test_a_child_forked_while_a_thread_records_can_record() -> None:
    """fork() copies a lock held by another thread, held forever: the child gets new ones."""
    fast = FastInstruments("test")
    histogram = fast.histogram(catalogue.HTTP_SERVER_REQUEST_DURATION, (1.0,), 10)
    held, release = threading.Event(), threading.Event()

    def record_slowly() -> None:
        with histogram._lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=record_slowly)
    thread.start()
    assert held.wait(10)
    with warnings.catch_warnings():  # Python >= 3.12 warns about fork() with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        histogram.record(0.5, ("GET", "/", 200, None, "http", "1.1"))
        os._exit(0 if histogram.metric(0, 1).data.data_points[0].count == 1 else 1)
    release.set()
    thread.join()
    deadline = time.monotonic() + 10
    while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    if waited == (0, 0):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on a lock it inherited")
    assert os.waitstatus_to_exitcode(waited[1]) == 0
