"""HTTP server metrics for Flask, Django and any WSGI app: a metrics-only WSGI middleware.

The same metrics and rules as the ASGI middleware (`asgi.py`, through `_http_server`): one
`http.server.request.duration` per request, timed until the server closes the response
iterable (a streamed response is timed to its last chunk), `http.server.active_requests`,
the opt-in body sizes and time to first byte; the metrics endpoint is answered before the
app sees the request (so a scrape is never counted and never reaches its router).

The hook a framework uses to name the route (WSGI itself has no router): during the request,
put the route TEMPLATE in the environ under `ROUTE_KEY` ("otel_kit.route"), e.g.
`request.environ[ROUTE_KEY] = request.url_rule.rule` (Flask, done by `flask.py`) or
`request.META[ROUTE_KEY] = request.resolver_match.route` (Django). Without it the request
has no `http.route` (an unmatched path, a 404: never the raw path). A framework that turns an
exception into its own 500 response puts the exception's `error_type()` under `ERROR_KEY`
("otel_kit.error_type"), so `error.type` is the class as when the exception reaches the
server. The environ is the request's own dict (Flask's `request.environ`, Django's
`request.META`), so no context variable is needed and threads, greenlets and streamed
responses each see their own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from time import perf_counter
from typing import Any

from otel_kit._exporters.auth import WSGIApp
from otel_kit._instrumentation._context import error_type
from otel_kit._instrumentation._http_server import (
    ERROR_KEY,
    MEASURED_KEY,
    ROUTE_KEY,
    SCHEMES,
    ServerMiddleware,
    request_key,
)
from otel_kit._instruments import CURRENT, current_span
from otel_kit._support import report_failure

__all__ = ["ERROR_KEY", "ROUTE_KEY", "WSGIApp", "WSGIMetricsMiddleware", "is_flask"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

# SERVER_PROTOCOL as servers write it -> `network.protocol.version`; anything else: absent.
_VERSIONS = {
    "HTTP/1.0": "1.0",
    "HTTP/1.1": "1.1",
    "HTTP/2": "2",
    "HTTP/2.0": "2",
    "HTTP/3": "3",
    "HTTP/3.0": "3",
}


def is_flask(app: object) -> bool:
    """Whether `app` is a Flask app (found without importing flask)."""
    flask = sys.modules.get("flask")
    return flask is not None and isinstance(app, getattr(flask, "Flask", ()))


def _code(status: object) -> int | None:
    """The status code of a WSGI status line ("200 OK"); None for one that is not."""
    if isinstance(status, str) and status[:3].isdigit():
        return int(status[:3])
    return None


class WSGIMetricsMiddleware(ServerMiddleware):
    """Records `http.server.request.duration` and `http.server.active_requests`; opt-in, the
    body sizes and the time to the first response body byte. Built with `ServerMiddleware`'s
    arguments: a WSGI `app` and `metrics_app`."""

    app: WSGIApp
    _metrics_app: WSGIApp | None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if MEASURED_KEY in environ:
            return self.app(environ, start_response)
        environ[MEASURED_KEY] = True
        path: str = environ.get("PATH_INFO", "")
        if self._metrics_path is not None and path == self._metrics_path:
            assert self._metrics_app is not None
            return self._metrics_app(environ, start_response)
        if not self._measure or (
            self._excluded is not None
            and self._excluded.search(environ.get("SCRIPT_NAME", "") + path)
        ):
            return self.app(environ, start_response)
        exchange = _Exchange(self, environ, start_response)
        try:
            result = self.app(environ, exchange.start_response)
        except BaseException as exc:
            exchange.finish(error_type(exc), failed=True)
            raise
        if type(result) is environ.get("wsgi.file_wrapper") and exchange.keep_file(result):
            return result  # the server's own file wrapper: it may send the file itself
        exchange.result = result
        return exchange


class _Exchange:
    """One measured request: the app's `start_response` and response iterable pass through
    it; recorded once, when the server closes the iterable or the app raises."""

    __slots__ = (
        "_environ",
        "_middleware",
        "_start",
        "_start_response",
        "active_key",
        "done",
        "file",
        "first_byte",
        "headers",
        "method",
        "result",
        "scheme",
        "sent",
        "span",
        "status",
        "version",
    )

    def __init__(
        self, middleware: WSGIMetricsMiddleware, environ: Environ, start_response: StartResponse
    ) -> None:
        self._middleware = middleware
        self._environ = environ
        self._start_response = start_response
        method = environ.get("REQUEST_METHOD", "GET")
        self.method = method if method in middleware._known_methods else "_OTHER"
        scheme = environ.get("wsgi.url_scheme", "http")
        self.scheme = scheme if scheme in SCHEMES else "_OTHER"
        self.version = _VERSIONS.get(environ.get("SERVER_PROTOCOL", ""))
        self.status: Any = None
        self.headers: Any = None
        # The span current when the app started its response, for the exemplar: a tracing
        # middleware inside this one (contrib's) has ended its span when the server closes.
        self.span: Any = CURRENT
        self.file = False
        self.result: Iterable[bytes] = ()
        self.done = False
        self.sent = 0
        self.first_byte: float | None = None
        self.active_key = (self.method, self.scheme)
        active = middleware._active
        if active is not None:
            try:
                active.up(self.active_key)
            except Exception:  # a metrics failure must never reach the application
                report_failure("HTTP server")
        self._start = perf_counter()

    def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        self.status = status
        self.headers = headers
        self.span = current_span() or CURRENT
        return self._start_response(status, headers, exc_info)

    def keep_file(self, result: Any) -> bool:
        """Measure a response that is the server's `wsgi.file_wrapper` without wrapping it,
        which would cost the server its sendfile(): its `close` (set on the instance by
        wsgiref's and gunicorn's wrappers) is replaced by one that records. False when the
        object takes no attribute."""
        close = getattr(result, "close", None)
        try:
            result.close = lambda: self._close(close)
        except Exception:
            return False
        self.file = True
        if self._middleware._tally:
            self.first_byte = perf_counter()  # the server sends it from now
        return True

    def __iter__(self) -> Iterator[bytes]:
        if self._middleware._tally:
            return self._tallied()
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        started = False  # a chunk went to the server, so did the status line
        try:
            for chunk in self.result:
                yield chunk
                started = True
        except GeneratorExit:  # the server stopped iterating; it closes us next
            raise
        except BaseException as exc:
            self.finish(error_type(exc), failed=not started)
            raise

    def _tallied(self) -> Iterator[bytes]:
        started = False
        try:
            for chunk in self.result:
                if chunk and self.first_byte is None:
                    self.first_byte = perf_counter()
                self.sent += len(chunk)
                yield chunk
                started = True
        except GeneratorExit:
            raise
        except BaseException as exc:
            self.finish(error_type(exc), failed=not started)
            raise

    def close(self) -> None:
        """PEP 3333: the server calls this once the response is sent (or abandoned)."""
        self._close(getattr(self.result, "close", None))

    def _close(self, close: Callable[[], object] | None) -> None:
        try:
            if close is not None:
                close()
        except BaseException as exc:
            self.finish(error_type(exc))
            raise
        self.finish()

    def finish(self, error: str | None = None, *, failed: bool = False) -> None:
        """Record the request once. `failed`: the app raised before anything was sent, so the
        server answers 500 whatever status the app had given."""
        if self.done:
            return
        self.done = True
        elapsed = perf_counter() - self._start
        middleware = self._middleware
        try:
            if middleware._active is not None:
                middleware._active.down(self.active_key)  # first: a failure below cannot leak it
            environ = self._environ
            code = 500 if failed else _code(self.status)
            if error is None:
                error = environ.get(ERROR_KEY)
            route = environ.get(ROUTE_KEY)
            key = request_key(self.method, route, code, error, self.scheme, self.version)
            middleware._duration.record(elapsed, key, self.span)
            if middleware._tally:
                self._record_tally(key, answered=not failed and self.status is not None)
        except Exception:  # a metrics failure must never reach the application
            report_failure("HTTP server")

    def _record_tally(self, key: tuple[Any, ...], *, answered: bool) -> None:
        """The opt-in measurements, by the ASGI middleware's rules: the request body's size is
        its Content-Length (0 without one: WSGI gives no cheap count of a chunked body); no
        response size or first byte for a request that got no response from the app; HEAD
        sends no body."""
        middleware = self._middleware
        head = key[0] == "HEAD"
        if middleware._body_sizes is not None:
            request, response = middleware._body_sizes
            length = self._environ.get("CONTENT_LENGTH") or ""
            request.record(int(length) if length.isdigit() else 0, key)
            if answered:
                response.record(0 if head else self._response_size(), key)
        first_byte = self.first_byte
        if middleware._first_byte is not None and first_byte is not None and answered and not head:
            middleware._first_byte.record(first_byte - self._start, key[:3])  # no error.type

    def _response_size(self) -> int:
        """The bytes of the body; of a file the server sent itself, its Content-Length."""
        if not self.file:
            return self.sent
        for name, value in self.headers or ():
            if name.lower() == "content-length" and value.isdigit():
                return int(value)
        return 0
