"""Faults with real processes: clients that disconnect mid-request, scrapes racing heavy load,
an exporter that raises. The application's own answers stay the same in each case."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.exposition import samples, series, value
from tests.handles import MakeHandle
from tests.integration.otlp_receiver import OTLPReceiver, total_count
from tests.integration.processes import free_port, server

pytestmark = pytest.mark.integration

COUNT = "http_server_request_duration_seconds_count"
ACTIVE = "http_server_active_requests"

APP = """
import asyncio, sys
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from otel_kit import setup_metrics

app = FastAPI()
setup_metrics(app)

@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}

@app.get("/unavailable")
async def unavailable() -> None:
    raise HTTPException(503)

@app.get("/slow")
async def slow() -> dict[str, str]:
    await asyncio.sleep(0.3)
    return {"ok": "yes"}

@app.get("/stream")
async def stream(lines: int) -> StreamingResponse:
    async def body():
        for i in range(lines):
            yield f"{i}\\n".encode()
            await asyncio.sleep(0.01)
    return StreamingResponse(body())

@app.post("/upload")
async def upload(request: Request) -> dict[str, int]:
    return {"size": len(await request.body())}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http=sys.argv[2], log_level="warning")
"""


@contextmanager
def app_server(tmp_path: Path, http: str = "auto") -> Iterator[str]:
    """APP under uvicorn (`http` = its HTTP implementation); yields the base URL."""
    script = tmp_path / "app.py"
    script.write_text(APP)
    port = free_port()
    with server([str(script), str(port), http], port) as base:
        yield base


def wait_for(base: str, done: Any, what: str) -> str:
    """Scrape until `done(text)`; at most 10 s."""
    for _ in range(100):
        text = httpx.get(base + "/metrics", timeout=10).text
        if done(text):
            return text
        time.sleep(0.1)
    pytest.fail(f"{what} not seen within 10 s:\n{text}")


# -- clients disconnecting mid-request ----------------------------------------------------------


def raw_request(port: int, data: bytes, read_until: bytes = b"") -> bytes:
    """Send `data` on a fresh connection, read until `read_until` is seen, then close it."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        while read_until and read_until not in received:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
    return received


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_clients_disconnecting_mid_request(tmp_path: Path, http: str) -> None:
    """Each request a client abandons is counted exactly once, with what the app answered:
    - before the response (the handler is still running): the app's status, 200 (the server
      drops the response);
    - in the middle of a streamed body: the status already sent, 200, timed until the
      disconnect, and no error (a stream, or an SSE feed, ends by the client going away);
    - in the middle of the request body: the app's `await request.body()` raises
      ClientDisconnect, which its error middleware answers with 500: status 500,
      error_type starlette.requests.ClientDisconnect;
    - before its headers are complete: no request reached the app, nothing is counted.
    Active requests go back to 0 and the server keeps answering correctly."""
    rounds = 5
    with app_server(tmp_path, http) as base:
        port = int(base.rsplit(":", 1)[1])
        with httpx.Client(base_url=base, timeout=10) as client:
            for i in range(rounds):
                raw_request(port, b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
                head = raw_request(
                    port, b"GET /stream?lines=1000 HTTP/1.1\r\nHost: t\r\n\r\n", b"\n3\n"
                )
                assert head.startswith(b"HTTP/1.1 200 OK\r\n")
                raw_request(
                    port,
                    b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\npartial",
                )
                raw_request(port, b"GET /items/1 HTTP/1.1\r\nHo")
                # Meanwhile the server answers everyone else correctly.
                assert client.get(f"/items/{i}").json() == {"id": i}
                assert client.post("/upload", content=b"x" * i).json() == {"size": i}
                assert client.get("/stream", params={"lines": 20}).text == "".join(
                    f"{n}\n" for n in range(20)
                )

            def settled(text: str) -> bool:
                return value(text, ACTIVE) == 0 and value(text, COUNT) >= 6 * rounds

            text = wait_for(base, settled, "every abandoned request finished")

    def count(route: str, status: str, **labels: str) -> float:
        return value(text, COUNT, http_route=route, http_response_status_code=status, **labels)

    assert count("/slow", "200") == rounds
    assert count("/stream", "200") == 2 * rounds  # abandoned and complete ones
    assert count("/upload", "500", error_type="starlette.requests.ClientDisconnect") == rounds
    assert count("/upload", "200") == rounds
    assert count("/items/{item_id}", "200") == rounds  # the incomplete request: not counted
    assert value(text, COUNT) == 6 * rounds
    assert {s.get("error_type") for s in series(text, COUNT)} == {
        None,
        "starlette.requests.ClientDisconnect",
    }
    assert value(text, ACTIVE) == 0
    # The abandoned streams were cut short: each took less than its 10 s of lines.
    assert (
        value(text, "http_server_request_duration_seconds_bucket", http_route="/stream", le="10.0")
        == 2 * rounds
    )


# -- concurrent scrapes during heavy load --------------------------------------------------------


def check_histograms(text: str) -> None:
    """Every duration series of one scrape is consistent: cumulative buckets never go down,
    and the +Inf bucket equals the count (no torn read)."""
    buckets: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
    counts: dict[frozenset[tuple[str, str]], float] = {}
    for (name, labels), sample in samples(text).items():
        if name == COUNT:
            counts[labels] = sample
        elif name == "http_server_request_duration_seconds_bucket":
            le = dict(labels)["le"]
            series = frozenset((k, v) for k, v in labels if k != "le")
            buckets.setdefault(series, []).append((float(le), sample))
    assert set(buckets) == set(counts)
    for series, points in buckets.items():
        cumulative = [count for _, count in sorted(points)]
        assert cumulative == sorted(cumulative)
        assert cumulative[-1] == counts[series]


def test_concurrent_scrapes_during_heavy_load(tmp_path: Path) -> None:
    """8 clients send 5,000 requests (one in ten answered 503) while 4 scrapers scrape in a
    loop: every answer is right, every scrape parses and is consistent, each scraper's totals
    never go down, and the last scrape has exactly the requests sent."""
    total, clients, scrapers = 5_000, 8, 4
    with app_server(tmp_path) as base:
        load_done = threading.Event()

        def load(worker: int) -> None:
            with httpx.Client(base_url=base, timeout=30) as client:
                for i in range(worker, total, clients):
                    if i % 10 == 0:
                        assert client.get("/unavailable").status_code == 503
                    else:
                        assert client.get(f"/items/{i}").json() == {"id": i}

        def scrape() -> list[tuple[float, float]]:
            seen = []
            with httpx.Client(base_url=base, timeout=30) as client:
                while not load_done.is_set() or not seen:
                    response = client.get("/metrics")
                    assert response.status_code == 200
                    check_histograms(response.text)
                    active = value(response.text, ACTIVE)
                    assert 0 <= active <= clients
                    ok = value(response.text, COUNT, http_route="/items/{item_id}")
                    unavailable = value(response.text, COUNT, error_type="503")
                    seen.append((ok, unavailable))
            return seen

        with ThreadPoolExecutor(clients + scrapers) as pool:
            scraping = [pool.submit(scrape) for _ in range(scrapers)]
            loads = [pool.submit(load, worker) for worker in range(clients)]
            try:
                for future in loads:
                    future.result()
            finally:
                load_done.set()
            sequences = [future.result() for future in scraping]
        final = httpx.get(base + "/metrics", timeout=10).text

    for seen in sequences:
        for column in (0, 1):
            totals = [point[column] for point in seen]
            assert totals == sorted(totals), "a total went down"
    assert sum(len(seen) for seen in sequences) > 4 * scrapers  # they really raced the load
    assert value(final, COUNT, http_route="/items/{item_id}") == total - total // 10
    assert value(final, COUNT, http_route="/unavailable", error_type="503") == total // 10
    assert value(final, COUNT) == total
    assert value(final, ACTIVE) == 0
    print(f"\n{total} requests, {sum(len(s) for s in sequences)} scrapes during them")


# -- an exporter that raises --------------------------------------------------------------------


async def test_an_exporter_that_raises(
    make_handle: MakeHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The OTLP exporter raising (not just failing) for its first 3 exports: the app answers
    as always, one warning names the exception, recovery is logged, and the first export that
    works carries the requests made meanwhile (cumulative: nothing lost)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    real_export = OTLPMetricExporter.export
    raised = threading.Semaphore(0)
    failures = 3

    def export(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        if failures:
            failures -= 1
            raised.release()
            raise RuntimeError("exporter bug")
        return real_export(self, *args, **kwargs)

    monkeypatch.setattr(OTLPMetricExporter, "export", export)
    caplog.set_level(logging.INFO, logger="otel_kit")
    duration, route = "http.server.request.duration", {"http.route": "/items/{item_id}"}
    with OTLPReceiver() as receiver:
        app = FastAPI()
        handle = make_handle(
            app,
            metrics_exporter="otlp",
            otlp_endpoint=receiver.endpoint,
            export_interval_ms=100,
            disabled_instrumentations="runtime",
        )

        @app.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            return {"id": item_id}

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for i in range(25):
                assert (await client.get(f"/items/{i}")).json() == {"id": i}
            for _ in range(3):
                assert raised.acquire(timeout=10)
            first = receiver.wait_for(lambda request: True)
            for i in range(25, 50):
                assert (await client.get(f"/items/{i}")).json() == {"id": i}
        receiver.wait_for(lambda request: total_count(request, duration, **route) == 50)
        handle.shutdown()
    assert total_count(first, duration, **route) == 25
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "otel_kit"]
    warnings = [message for level, message in lines if level == "WARNING"]
    assert len(warnings) == 1
    assert "(RuntimeError: exporter bug)" in warnings[0]
    assert any("works again after 3 failed exports" in message for _, message in lines)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
