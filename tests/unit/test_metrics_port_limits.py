"""The separate metrics port bounds what clients take from the app's process (issue 20): idle
and slow-drip connections cost no thread and are closed after the request timeout, while a
scrape with the token is answered."""

from __future__ import annotations

import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from otel_kit._exporters import server as server_module
from otel_kit._exporters.auth import MetricsAuth
from otel_kit._exporters.server import start_metrics_server

TOKEN = "scrape-t0ken"
TIMEOUT_S = 1.0  # short, so that the test sees the server close the idle connections
IDLE = 200


@pytest.fixture
def port() -> Iterator[int]:
    registry = CollectorRegistry()
    Counter("probe_requests", "for the test", registry=registry).inc(3)
    server = start_metrics_server(
        0, "127.0.0.1", registry, MetricsAuth(TOKEN, None), timeout_s=TIMEOUT_S
    )
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def scrape(port: int, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def closed_by_server(conn: socket.socket, deadline: float) -> bool:
    """Whether the server closes `conn` (EOF or reset) before `deadline`."""
    while (left := deadline - time.monotonic()) > 0:
        if select.select([conn], [], [], left)[0]:
            try:
                if conn.recv(1024) == b"":
                    return True
            except ConnectionResetError:
                return True
    return False


def test_idle_connections_take_no_threads_and_are_closed(port: int) -> None:
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(IDLE)]
    opened = time.monotonic()
    try:
        status, text = scrape(port, TOKEN)
        assert status == 200
        assert "probe_requests_total 3.0" in text
        assert scrape(port, None)[0] == 401
        assert scrape(port, "wrong")[0] == 401
        # one accepting thread already runs; handler threads exist only while answering
        assert threading.active_count() - before <= server_module.MAX_HANDLERS + 2
        deadline = opened + TIMEOUT_S + 10  # the timeout plus room for a loaded machine
        still_open = [conn for conn in idle if not closed_by_server(conn, deadline)]
        assert still_open == []
    finally:
        for conn in idle:
            conn.close()


def test_a_slow_drip_client_is_dropped_at_the_deadline(port: int) -> None:
    """Bytes trickling in do not extend the time a client has for its request head."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        started = time.monotonic()
        closed = False
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 1000:
            try:
                conn.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(conn, time.monotonic() + 0.05):
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed, "the server kept a client that never finished its request head"
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 10


def test_requests_beyond_the_handler_bound_are_answered_in_turn(port: int) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        status, _ = scrape(port, TOKEN)
        with lock:
            results.append(status)

    threads = [threading.Thread(target=one) for _ in range(3 * server_module.MAX_HANDLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [200] * len(threads)
