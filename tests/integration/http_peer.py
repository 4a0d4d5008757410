"""The HTTP peers of the outbound tests (urllib3, requests, aiohttp), as context managers
each test module makes its fixtures of: a real threaded server on loopback, and a port that
accepts connections and never answers."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

from otel_kit import MetricsHandle
from tests.exposition import series
from tests.handles import MakeHandle
from tests.integration.processes import http_server

__all__ = ["MARK", "Handler", "handle_for", "peer_server", "port_of", "render", "stalled_port"]

MARK = "zz-marker-7f3a"  # in URL paths and query strings; must never reach the exposition


class Handler(BaseHTTPRequestHandler):
    """/status/<code>[/...], /redirect (302 to /status/200), /slow-body (headers now, body 1 s
    later); anything else 200."""

    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse pooled connections
    timeout = 10  # an idle kept-alive connection ends, so server_close() cannot hang
    received: ClassVar[Counter[str]] = Counter()  # requests by path: what a client sent

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.received[path] += 1
        try:
            self.rfile.read(
                int(self.headers.get("Content-Length") or 0)
            )  # the next request follows
            if path.startswith("/redirect"):
                self.send_response(302)
                self.send_header("Location", f"/status/200?{MARK}=after")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = int(path.split("/")[2]) if path.startswith("/status/") else 200
            body = b"ok"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if path.startswith("/slow-body"):
                self.wfile.flush()
                time.sleep(1.0)
            self.wfile.write(body)
        except OSError:  # the client gave up: nothing to answer
            self.close_connection = True

    do_POST = do_DELETE = do_PURGE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def peer_server() -> Iterator[str]:
    """`Handler` on a free loopback port: its base URL, for the block."""
    with http_server(Handler) as url:
        yield url


@contextmanager
def stalled_port() -> Iterator[str]:
    """The base URL of a port that accepts connections (the kernel's backlog) and never
    answers, for the block."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]


def handle_for(make_handle: MakeHandle, **settings: object) -> MetricsHandle:
    return make_handle(prometheus_host="127.0.0.1", prometheus_port=0, **settings)


def render(handle: MetricsHandle) -> str:
    """The exposition, checked for what must never be in it: no marker, path, query or
    parameter in any outbound label."""
    text = handle.render().decode()
    assert MARK not in text and "/status" not in text and "/redirect" not in text
    values = [
        v
        for labels in series(text, "http_client_request_duration_seconds_count")
        for v in labels.values()
    ]
    assert not [v for v in values if "/" in v or "?" in v or "=" in v]
    return text
