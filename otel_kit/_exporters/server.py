"""The separate metrics port (`OTEL_EXPORTER_PROMETHEUS_PORT`): prometheus_client's WSGI app,
behind the metrics endpoint's credentials when some are configured, on a server that bounds what
clients can take from the application's process.

prometheus_client's own server starts a thread per connection and waits forever for its
request, before any credential is checked: every idle connection costs the app a thread. Here
one thread accepts connections and reads their request heads without blocking; a connection
gets one of at most `MAX_HANDLERS` handler threads only once its whole head has arrived, and is
closed if that takes longer than `REQUEST_TIMEOUT_S` (idle and slow-drip clients alike). At most
`MAX_WAITING` connections wait for their head; a new one closes the oldest.
"""

from __future__ import annotations

import collections
import io
import selectors
import socket
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from otel_kit._exporters.auth import MetricsAuth, WSGIApp

__all__ = [
    "DEFAULT_PORT",
    "MAX_HANDLERS",
    "MAX_WAITING",
    "REQUEST_TIMEOUT_S",
    "start_metrics_server",
]

DEFAULT_PORT = 9464  # the OTel spec's default for OTEL_EXPORTER_PROMETHEUS_PORT
MAX_HANDLERS = 8  # threads answering requests; a scrape takes milliseconds
MAX_WAITING = 64  # connections whose request head has not fully arrived yet
# Time a client has to send its request head, and then to take the response.
REQUEST_TIMEOUT_S = 5.0
_MAX_HEAD = 32 * 1024  # a scrape's head is a few hundred bytes
_POLL_S = 0.5  # how soon shutdown() is noticed, as in socketserver


class _MetricsServer(WSGIServer):
    """wsgiref's server (binding, WSGI environ, app) with otel-kit's loop instead of
    socketserver's: `serve_forever` and `shutdown` are replaced, the rest is inherited."""

    request_queue_size = MAX_WAITING  # the listen backlog: bursts wait in the kernel

    def __init__(self, address: tuple[str, int], timeout_s: float) -> None:
        self._handler = _handler_class()
        super().__init__(address, self._handler)
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._ready: collections.deque[tuple[socket.socket, Any, bytes]] = collections.deque()
        self._handlers = 0  # handler threads running, at most MAX_HANDLERS

    def serve_forever(self, poll_interval: float = _POLL_S) -> None:
        # connection -> (deadline, address, what it sent so far); oldest first
        waiting: dict[socket.socket, tuple[float, Any, bytes]] = {}
        self.socket.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            try:
                while not self._stop.is_set():
                    soonest = next(iter(waiting.values()))[0] if waiting else None
                    wait = poll_interval if soonest is None else soonest - time.monotonic()
                    for key, _ in selector.select(max(0.0, min(wait, poll_interval))):
                        if key.fileobj is self.socket:
                            self._accept(selector, waiting)
                        else:
                            self._read(selector, waiting, key.fileobj)  # type: ignore[arg-type]
                    now = time.monotonic()
                    for conn, (deadline, _, _) in list(waiting.items()):
                        if deadline > now:
                            break  # deadlines follow the (insertion) order of accepts
                        self._drop(selector, waiting, conn)
            finally:
                for conn in list(waiting):
                    self._drop(selector, waiting, conn)
                self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._stopped.wait()

    def _accept(self, selector: selectors.BaseSelector, waiting: dict[socket.socket, Any]) -> None:
        while True:
            try:
                conn, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. out of file descriptors: back off, or this loop would spin
                self._stop.wait(0.1)
                return
            if len(waiting) >= MAX_WAITING:
                self._drop(selector, waiting, next(iter(waiting)))
            conn.setblocking(False)
            waiting[conn] = (time.monotonic() + self._timeout_s, address, b"")
            selector.register(conn, selectors.EVENT_READ)

    def _read(
        self,
        selector: selectors.BaseSelector,
        waiting: dict[socket.socket, tuple[float, Any, bytes]],
        conn: socket.socket,
    ) -> None:
        deadline, address, head = waiting[conn]
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        head += data
        if not data or len(head) > _MAX_HEAD:
            self._drop(selector, waiting, conn)
        elif b"\r\n\r\n" in head or b"\n\n" in head:
            selector.unregister(conn)
            del waiting[conn]
            self._dispatch(conn, address, head)
        else:
            waiting[conn] = (deadline, address, head)

    @staticmethod
    def _drop(
        selector: selectors.BaseSelector, waiting: dict[socket.socket, Any], conn: socket.socket
    ) -> None:
        selector.unregister(conn)
        del waiting[conn]
        conn.close()

    def _dispatch(self, conn: socket.socket, address: Any, head: bytes) -> None:
        with self._lock:
            if len(self._ready) >= MAX_WAITING:  # handlers stuck on clients not reading
                conn.close()
                return
            self._ready.append((conn, address, head))
            if self._handlers >= MAX_HANDLERS:
                return  # a running handler takes it next
            self._handlers += 1
        threading.Thread(target=self._handle, name="otel-kit-metrics", daemon=True).start()

    def _handle(self) -> None:
        while True:
            with self._lock:
                if not self._ready:
                    self._handlers -= 1
                    return
                conn, address, head = self._ready.popleft()
            conn.settimeout(self._timeout_s)  # sendall: the whole response within it
            try:
                self._handler(conn, address, self, head)
            except Exception:  # the client went away, or timed out taking the response
                pass
            finally:
                self.shutdown_request(conn)


def _handler_class() -> type[Any]:
    from prometheus_client.exposition import _SilentHandler

    class Handler(_SilentHandler):
        """prometheus_client's quiet handler, reading the request head already received."""

        def __init__(self, request: socket.socket, address: Any, server: Any, head: bytes):
            self._head = head
            super().__init__(request, address, server)

        def setup(self) -> None:
            super().setup()
            self.rfile.close()  # the socket's reader: everything sent is in `head`
            self.rfile = io.BytesIO(self._head)

    return Handler


def start_metrics_server(
    port: int,
    addr: str,
    registry: CollectorRegistry,
    auth: MetricsAuth | None,
    *,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> WSGIServer:
    """Serve `registry` on `addr:port`, behind `auth` if given, from a daemon thread.

    prometheus_client's `start_http_server` offers no way to wrap its WSGI app nor to bound its
    threads; its address-family helper and quiet handler are reused, the two private names of
    prometheus_client otel-kit depends on, imported here and nowhere else.
    """
    from prometheus_client.exposition import _get_best_family

    class Server(_MetricsServer):
        """Per call: the address family depends on `addr` (IPv4 or IPv6)."""

    Server.address_family, addr = _get_best_family(addr, port)  # type: ignore[no-untyped-call]
    app: WSGIApp = make_wsgi_app(registry)
    if auth is not None:
        app = auth.wsgi(app)
    server = Server((addr, port), timeout_s)
    server.set_app(app)
    threading.Thread(target=server.serve_forever, name="otel-kit-metrics-port", daemon=True).start()
    return server
