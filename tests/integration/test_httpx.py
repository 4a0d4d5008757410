"""Outbound httpx calls against a real HTTP server on loopback: statuses, errors, timeouts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from otel_kit._instruments import FastHistogram
from tests.exposition import series, value
from tests.handles import MakeHandle

# free_port(): nothing listens there, so connecting is refused
from tests.integration.http_peer import port_of
from tests.integration.processes import free_port, http_server

pytestmark = pytest.mark.integration
COUNT = "http_client_request_duration_seconds_count"
BUCKET = "http_client_request_duration_seconds_bucket"
SECRET = "s3cr3t-token"  # appears in every query string; must never reach the exposition


class Handler(BaseHTTPRequestHandler):
    """/status/<code>, /slow (headers after 1 s), /slow-body (headers now, body after 1 s)."""

    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse pooled connections
    timeout = 10  # an idle kept-alive connection ends, so server_close() cannot hang

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        try:
            if path == "/slow":
                time.sleep(1.0)
            status = int(path.rsplit("/", 1)[1]) if path.startswith("/status/") else 200
            body = b"ok"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if path == "/slow-body":
                time.sleep(1.0)
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout test): nothing to answer
            self.close_connection = True

    do_POST = do_DELETE = do_PURGE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with http_server(Handler) as url:
        yield url


def test_sync_client(make_handle: MakeHandle, base: str) -> None:
    port = port_of(base)
    early = httpx.Client(base_url=base)  # created before setup: must be measured too
    handle = make_handle(
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        peer_services=f"127.0.0.1:{port}=local-api,api.stripe.com=stripe",
    )
    with early, httpx.Client(base_url=base) as late:
        for i in range(3):
            assert early.get(f"/status/200?id={i}&key={SECRET}").text == "ok"
        assert late.get("/status/200").status_code == 200
        for _ in range(2):
            assert late.get(f"/status/404?key={SECRET}").status_code == 404
        assert late.get("/status/500").status_code == 500
        assert late.post("/status/201").status_code == 201
        assert late.request("PURGE", "/status/200").status_code == 200
    text = handle.render().decode()

    def count(**labels: str) -> float:
        return value(text, COUNT, server_address="127.0.0.1", server_port=port, **labels)

    assert count(http_request_method="GET", http_response_status_code="200") == 4
    assert count(http_response_status_code="404", error_type="404") == 2
    assert count(http_response_status_code="500", error_type="500") == 1
    assert count(http_request_method="POST", http_response_status_code="201") == 1
    assert count(http_request_method="_OTHER", http_response_status_code="200") == 1
    assert count(service_peer_name="local-api") == 9
    assert count(network_protocol_version="1.1") == 9  # every response came over HTTP/1.1
    assert value(text, COUNT) == 9
    assert count(error_type="200") + count(error_type="201") == 0  # no error below 400
    assert len(series(text, COUNT)) == 5
    assert value(text, BUCKET, le="+Inf") == 9
    assert SECRET not in text and "/status" not in text
    values = [v for labels in series(text, COUNT) for v in labels.values()]
    assert not [v for v in values if "/" in v or "?" in v or "=" in v]


async def test_async_client(make_handle: MakeHandle, base: str) -> None:
    port = port_of(base)
    early = httpx.AsyncClient(base_url=base)
    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0)
    async with early, httpx.AsyncClient(base_url=base) as late:
        for i in range(2):
            assert (await early.get(f"/status/200?key={SECRET}{i}")).text == "ok"
        for _ in range(3):
            assert (await late.get("/status/404")).status_code == 404
        assert (await late.delete("/status/500")).status_code == 500
    text = handle.render().decode()

    def count(**labels: str) -> float:
        return value(text, COUNT, server_address="127.0.0.1", server_port=port, **labels)

    assert count(http_request_method="GET", http_response_status_code="200") == 2
    assert count(http_request_method="GET", http_response_status_code="404", error_type="404") == 3
    assert count(http_request_method="DELETE", error_type="500") == 1
    assert value(text, COUNT) == 6
    assert all("service_peer_name" not in labels for labels in series(text, COUNT))  # no map set
    assert SECRET not in text and "/status" not in text


def test_sync_connect_error_and_timeout(make_handle: MakeHandle, base: str) -> None:
    refused = free_port()
    handle = make_handle(
        prometheus_host="127.0.0.1", prometheus_port=0, peer_services="127.0.0.1=loopback"
    )
    with httpx.Client(timeout=0.1) as client:
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                client.get(f"http://127.0.0.1:{refused}/x?key={SECRET}")
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"{base}/slow?key={SECRET}")
    text = handle.render().decode()

    connect = {"server_port": str(refused), "error_type": "httpx.ConnectError"}
    peer = {"http_request_method": "GET", "service_peer_name": "loopback"}
    assert value(text, COUNT, **peer, **connect) == 2
    timeout = {"server_port": port_of(base), "error_type": "httpx.ReadTimeout"}
    assert value(text, COUNT, **timeout) == 1
    assert value(text, BUCKET, le="0.075", **timeout) == 0  # waited for the 0.1 s timeout
    assert value(text, BUCKET, le="10.0", **timeout) == 1
    assert value(text, COUNT) == 3
    no_response = ("http_response_status_code", "network_protocol_version")
    assert all(k not in labels for labels in series(text, COUNT) for k in no_response)
    assert SECRET not in text and "/slow" not in text


async def test_async_connect_error_and_timeout(make_handle: MakeHandle, base: str) -> None:
    refused = free_port()
    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0)
    async with httpx.AsyncClient(timeout=0.1) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{refused}/")
        for _ in range(2):
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"{base}/slow")
    text = handle.render().decode()

    assert value(text, COUNT, server_port=str(refused), error_type="httpx.ConnectError") == 1
    assert value(text, COUNT, server_port=port_of(base), error_type="httpx.ReadTimeout") == 2
    assert value(text, COUNT) == 3


def test_duration_ends_when_headers_arrive(make_handle: MakeHandle, base: str) -> None:
    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0)
    with httpx.Client(base_url=base) as client:
        start = time.perf_counter()
        assert client.get("/slow-body").text == "ok"
        assert time.perf_counter() - start >= 1.0  # the body came 1 s after the headers
        assert client.get("/slow").status_code == 200
    text = handle.render().decode()

    assert value(text, BUCKET, le="0.75") == 1  # /slow-body: headers came at once
    assert value(text, BUCKET, le="+Inf") == 2  # /slow: headers came after 1 s
    assert value(text, "http_client_request_duration_seconds_sum") >= 1.0


@pytest.mark.parametrize(
    ("url", "port"), [("http://127.0.0.1/", "80"), ("https://127.0.0.1/", "443")]
)
def test_default_port_from_scheme(make_handle: MakeHandle, url: str, port: str) -> None:
    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0)
    # nothing listens here (usual) or TLS fails: measured either way
    with httpx.Client(timeout=2, verify=False) as client, contextlib.suppress(httpx.TransportError):
        client.get(url)
    text = handle.render().decode()

    assert value(text, COUNT, server_address="127.0.0.1", server_port=port) == 1
    assert value(text, COUNT) == 1


def test_metrics_failure_never_reaches_the_caller(
    make_handle: MakeHandle,
    base: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(self: FastHistogram, amount: float, key: tuple[object, ...]) -> None:
        raise RuntimeError("metrics bug")

    make_handle(prometheus_host="127.0.0.1", prometheus_port=0)
    monkeypatch.setattr(FastHistogram, "record", broken)
    with httpx.Client(base_url=base, timeout=0.1) as client:
        assert client.get("/status/500").status_code == 500
        with pytest.raises(httpx.ConnectError):
            client.get(f"http://127.0.0.1:{free_port()}/")
    assert "recording httpx metrics failed" in caplog.text


def test_disabled_records_nothing(make_handle: MakeHandle, base: str) -> None:
    original = httpx.HTTPTransport.handle_request
    handle = make_handle(
        prometheus_host="127.0.0.1", prometheus_port=0, disabled_instrumentations="httpx"
    )
    assert httpx.HTTPTransport.handle_request is original
    with httpx.Client(base_url=base) as client:
        assert client.get("/status/200").status_code == 200
    text = handle.render().decode()
    assert series(text, COUNT) == []


async def test_undo_restores_the_transports(make_handle: MakeHandle, base: str) -> None:
    sync, async_ = httpx.HTTPTransport.handle_request, httpx.AsyncHTTPTransport.handle_async_request
    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0)
    assert httpx.HTTPTransport.handle_request is not sync
    assert httpx.AsyncHTTPTransport.handle_async_request is not async_
    handle.shutdown()
    assert httpx.HTTPTransport.handle_request is sync
    assert httpx.AsyncHTTPTransport.handle_async_request is async_

    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0)  # counts from zero
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/status/200")).status_code == 200
    assert value(handle.render().decode(), COUNT) == 1
