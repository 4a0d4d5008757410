"""HTTP server metrics for FastAPI, Starlette and any ASGI app: a metrics-only ASGI middleware.

Why not contrib's OpenTelemetryMiddleware: it builds spans and SDK measurements on every request
(~134 µs measured here, 0.51 of a bare app's throughput). This middleware only measures, through
the pre-aggregating instruments of `otel_kit._instruments`, and serves the metrics endpoint
itself so the scrape is never counted and never reaches the app's router.

`http.route` is the route TEMPLATE. FastAPI >= 0.165 resolves it exactly (router prefixes,
nested routers, mounts) through its telemetry hook; otel-kit gives that hook a request record
when FastAPI's own telemetry is not running. Elsewhere the template is found in the app's route tree
from the route (or endpoint) Starlette's router stored in the scope. Either way it is the template
as the app declares it, WITHOUT the ASGI `root_path` (`--root-path`, a proxy's prefix): the same
series on every FastAPI version and behind any proxy (FastAPI >= 0.165 itself puts it in front).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from time import perf_counter
from typing import Any

from otel_kit._instrumentation._context import error_type
from otel_kit._instrumentation._http_server import (
    ERROR_KEY,
    MEASURED_KEY,
    ROUTE_KEY,
    SCHEMES,
    VERSIONS,
    ServerMiddleware,
    is_5xx,
    request_key,
    status_code,
    warn_hidden_route,
)
from otel_kit._instruments import CURRENT, current_span
from otel_kit._support import report_failure

__all__ = ["MetricsMiddleware", "disable_fastapi_metrics"]

_log = logging.getLogger("otel_kit")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Leaf = tuple[str, tuple[Any, ...]]  # (full route template, the routes from the top to it)

_TELEMETRY_KEY = "fastapi.telemetry"


def _fastapi_request_record() -> Callable[[], Any] | None:
    """A factory for FastAPI's per-request telemetry record, or None on older FastAPI."""
    try:
        from fastapi.telemetry._api import _RequestTelemetry
    except ImportError:
        return None

    def make() -> Any:
        return _RequestTelemetry(span=None, span_method="HTTP", data=None, _mount_prefix="")

    try:
        sample = make()
    except TypeError:  # FastAPI changed the record; fall back to the generic route lookup.
        _log.info("otel-kit: unknown FastAPI telemetry record; using generic route lookup")
        return None
    # The dataclass's __init__ costs as much as a histogram's record: copy the sample's
    # fields instead (a fresh list for `_exceptions`), when every other one is None or a str.
    fields = getattr(sample, "__dict__", None)
    if (
        fields is None
        or fields.get("_exceptions") != []
        or any(
            value is not None and type(value) is not str
            for name, value in fields.items()
            if name != "_exceptions"
        )
    ):
        return make
    new = object.__new__

    def clone() -> Any:
        record = new(_RequestTelemetry)
        record.__dict__ = fresh = fields.copy()  # copy(): faster than {**fields}
        fresh["_exceptions"] = []
        return record

    return clone


def disable_fastapi_metrics(app: Any) -> None:
    """Turn off FastAPI's native request metrics, which otel-kit records instead.

    FastAPI >= 0.165 records `http.server.request.duration` through the global meter provider
    once one is set; with otel-kit's middleware too, each request would be counted twice.
    Its tracing and logs stay as the application configured them.
    """
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict) and "metrics" in config:
        config["metrics"] = False


def _leaves(
    routes: Any, target: Any, prefix: str = "", chain: tuple[Any, ...] = ()
) -> Iterator[Leaf]:
    """(full template, routes from the top to it) of every route that is `target` or has it
    as endpoint, in the order Starlette's router tries them."""
    for route in routes:
        path_format = getattr(route, "path_format", None)
        if isinstance(path_format, str) and (
            route is target
            or getattr(route, "endpoint", None) is target
            or getattr(route, "app", None) is target  # a Mount, as Starlette < 1 stores it
        ):
            yield prefix + path_format, (*chain, route)
        inner = getattr(route, "routes", None)  # Mount and Host
        if inner and len(chain) < 8:
            # A Mount's path as a template, convertors dropped like a route's ({id:int} -> {id});
            # a Host has none.
            mount = getattr(route, "path_format", "").removesuffix("/{path}")
            yield from _leaves(inner, target, prefix + mount, (*chain, route))


def _matching(leaves: list[Leaf], scope: Scope) -> str | None:
    """Of several routes sharing one endpoint, the template of the one that took the request:
    each candidate's chain of routes is matched again as the router did, from the top app's
    root path (which Mounts keep in `app_root_path`)."""
    top = {**scope, "root_path": scope.get("app_root_path", scope.get("root_path", ""))}
    for template, chain in leaves:
        child = top
        try:
            for route in chain:
                match, update = route.matches(child)
                if getattr(match, "name", None) != "FULL":
                    break
                child = {**child, **update}
            else:
                return template
        except Exception:  # a route class of its own: no label rather than a wrong one
            continue
    return None


def _generic_route(scope: Scope, cache: dict[int, tuple[Any, list[Leaf]]]) -> str | None:
    """The route template from the route (or endpoint) Starlette's router stored in the scope.

    Found once per route by walking the app's route tree from the top router, so router
    prefixes and mount paths (with their parameters as `{name}`) are included. Starlette
    before 1.x stores only the endpoint: when several routes share it (stacked decorators,
    `add_route` twice), the one that matches the request is asked for every request.
    """
    target = scope.get("route") or scope.get("endpoint")
    if target is None:
        return None  # the router matched nothing
    # Routes are often unhashable (they define __eq__): key by id, keep the object so the id
    # cannot be reused.
    entry = cache.get(id(target))
    if entry is not None and entry[0] is target:
        leaves = entry[1]
    else:
        leaves = list(_leaves(getattr(scope.get("router"), "routes", ()), target))
        if len(cache) < 10_000:
            cache[id(target)] = (target, leaves)
    if not leaves:
        return None
    if len(leaves) == 1:
        return leaves[0][0]
    return _matching(leaves, scope)


def _paths(routes: Any, prefix: str = "", depth: int = 0) -> Iterator[str]:
    """The full path template of every route and mount in a Starlette route tree."""
    for route in routes:
        inner = getattr(route, "routes", None)  # Mount and Host
        path_format = getattr(route, "path_format", None)
        path = prefix
        if isinstance(path_format, str):
            path += path_format.removesuffix("/{path}") if inner is not None else path_format
            yield path
        if inner and depth < 8:
            yield from _paths(inner, path, depth + 1)


def _warn_if_hidden(app: Any, metrics_path: str) -> None:
    """Log when a route (or mount) of `app` is at the metrics path: the middleware answers
    that path itself, so the app's own endpoint there (prometheus-fastapi-instrumentator's,
    a hand-written one) would be unreachable without a word."""
    try:
        hidden = metrics_path in _paths(getattr(app, "routes", ()))
    except Exception:  # a route class of its own: no warning rather than a failed setup
        return
    if hidden:
        warn_hidden_route(metrics_path)


def _content_length(headers: Any) -> int | None:
    """The Content-Length of ASGI headers, None when absent or not a number."""
    try:
        for name, value in headers or ():
            if name.lower() == b"content-length":
                return int(value) if value.isdigit() else None
    except Exception:  # headers the server should have refused: no length rather than a crash
        pass
    return None


class _BodyTally:
    """The body bytes and the first body byte's time of one request, counted as the messages
    pass through `receive` and `send` (nothing is buffered or copied). Only with
    http_body_sizes or http_time_to_first_byte on: otherwise no message takes this detour."""

    __slots__ = (
        "_receive",
        "_send",
        "answered",
        "first_byte",
        "pathsend",
        "received",
        "request_complete",
        "response_headers",
        "sent",
    )

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.received = 0
        self.request_complete = False
        self.sent = 0
        self.answered = False  # the app's response started
        self.pathsend = False
        self.response_headers: Any = None
        self.first_byte: float | None = None

    async def receive(self) -> Message:
        message = await self._receive()
        try:
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    self.request_complete = True
        except Exception:  # the app is the judge of a message: pass it on as it is
            pass
        return message

    async def send(self, message: Message) -> None:
        try:
            kind = message["type"]
            if kind == "http.response.body":
                size = len(message.get("body", b""))
                if size and self.first_byte is None:
                    # Taken before the server's send, which may wait for a slow client to read.
                    self.first_byte = perf_counter()
                self.sent += size
            elif kind == "http.response.start":
                self.answered = True
                self.response_headers = message.get("headers")
            elif kind == "http.response.pathsend":  # the server sends the file itself
                self.pathsend = True
                if self.first_byte is None:
                    self.first_byte = perf_counter()
        except Exception:  # the server is the judge of a message: pass it on as it is
            pass
        await self._send(message)

    def request_size(self, scope: Scope) -> int:
        """The bytes the app read; its Content-Length when the app stopped before the end (a
        request refused unread was sent whole all the same, and semconv counts what was sent)."""
        if self.request_complete:
            return self.received
        return max(self.received, _content_length(scope.get("headers")) or 0)

    def response_size(self) -> int:
        if self.pathsend:  # only the response's Content-Length says how big the file is
            return _content_length(self.response_headers) or self.sent
        return self.sent


class _Exchange:
    """One request on its way through the middleware: the `send` the app is given, and the
    records made when its response completes (one object, not per-request closures: cheaper
    to make and to read on every message)."""

    __slots__ = (
        "active_key",
        "done",
        "ended",
        "middleware",
        "record",
        "root",
        "scope",
        "server_send",
        "span",
        "start",
        "status",
        "tally",
        "version",
    )

    def __init__(
        self,
        middleware: MetricsMiddleware,
        scope: Scope,
        server_send: Send,
        active_key: tuple[str, str],
        version: str | None,
        record: Any,
        root: str,
        tally: _BodyTally | None,
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self.server_send = server_send
        self.active_key = active_key  # (method, scheme)
        self.version = version
        self.record = record
        self.root = root
        self.tally = tally
        self.status: Any = None  # as the app sent it: an int, unless the server is lax
        # The span current when the app started its response, for the exemplar: with a tracing
        # middleware inside this one (contrib's, when otel-kit wrapped a started app), a
        # request that raises is recorded after that middleware ended its server span.
        self.span: Any = CURRENT
        self.done = False
        self.ended: float | None = None  # when a 5xx response completed, its error type unknown
        self.start = perf_counter()

    def send(self, message: Message) -> Awaitable[None]:
        """The app's `send`: the server's own awaitable for every message but the one that
        completes the response, which is awaited here and then recorded (no coroutine of
        this middleware's per message)."""
        try:
            kind = message["type"]
            if kind == "http.response.start":
                self.status = message["status"]
                self.span = current_span() or CURRENT
            elif not self.done and (
                (kind == "http.response.body" and not message.get("more_body", False))
                or kind == "http.response.pathsend"
            ):
                return self._send_last(message)
        except Exception:  # the server is the judge of a message: pass it on as it is
            pass
        return self.server_send(message)

    async def _send_last(self, message: Message) -> None:
        await self.server_send(message)
        if self.done:  # recorded meanwhile
            return
        if self.ended is None and is_5xx(self.status):
            # Starlette's ServerErrorMiddleware sends its 500 before it re-raises: when it is
            # inside this middleware (`otel-kit run`, setup after start) the exception comes
            # next, so its class is the error type as with setup before start. Recorded when
            # the app returns; timed and inactive from now.
            self.ended = perf_counter()
            try:
                active = self.middleware._active
                if active is not None:
                    active.down(self.active_key)
            except Exception:
                report_failure("HTTP server")
        else:
            self.finish()

    def finish(self, error: str | None = None) -> None:
        """Record the request; without an exception, a 5xx status is the error type."""
        self.done = True
        ended = self.ended
        elapsed = (perf_counter() if ended is None else ended) - self.start
        try:
            middleware = self.middleware
            if ended is None and middleware._active is not None:
                middleware._active.down(self.active_key)  # first: a failure below cannot leak it
            status = self.status
            code = status if type(status) is int else status_code(status)
            scope = self.scope
            if error is None:  # a framework's own 500 for an exception (Django's)
                error = scope.get(ERROR_KEY)
            # The template a framework router found (Django's); else FastAPI's or Starlette's.
            route = scope.get(ROUTE_KEY) or getattr(self.record, "route", None)
            if route is None or route.endswith("/{path}"):
                # FastAPI's hook stops at a mounted app that is not FastAPI ("/sub/{path}")
                route = _generic_route(scope, middleware._templates) or route
            elif self.root and route.startswith(self.root):
                route = route[len(self.root) :]
            method, scheme = self.active_key
            key = request_key(method, route, code, error, scheme, self.version)
            middleware._duration.record(elapsed, key, self.span)
            if self.tally is not None:
                middleware._record_tally(self.tally, scope, key, self.start)
        except Exception:  # a metrics failure must never reach the application
            report_failure("HTTP server")


class MetricsMiddleware(ServerMiddleware):
    """Records `http.server.request.duration` and `http.server.active_requests`; opt-in, the
    body sizes and the time to the first response body byte."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        fastapi_routes: bool = False,
        on_shutdown: Callable[[], object] | None = None,
        routes_of: Any = None,
        **options: Any,
    ) -> None:
        """`options`: `ServerMiddleware`'s. `routes_of`: the Starlette app whose routes the
        metrics path may hide, checked here because Starlette builds its middleware (this)
        when it starts, after every route was added."""
        super().__init__(app, **options)
        self._on_shutdown = on_shutdown
        self._request_record = _fastapi_request_record() if fastapi_routes else None
        self._templates: dict[int, tuple[Any, list[Leaf]]] = {}
        if self._metrics_path is not None and routes_of is not None:
            _warn_if_hidden(routes_of, self._metrics_path)

    def _flush_at_shutdown(self, send: Send) -> Send:
        """uvicorn re-raises SIGTERM after its graceful shutdown, so atexit handlers (the SDK's
        flush) never run: push the last interval when the app's lifespan ends instead."""
        flush = self._on_shutdown
        assert flush is not None

        async def send_after_flush(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    await asyncio.to_thread(flush)
                except Exception:  # the flush must not keep the app from shutting down
                    report_failure("shutdown flush")
            await send(message)

        return send_after_flush

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self._on_shutdown is not None:
            await self.app(scope, receive, self._flush_at_shutdown(send))
            return
        if scope["type"] != "http" or MEASURED_KEY in scope:
            await self.app(scope, receive, send)
            return
        scope[MEASURED_KEY] = True
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if self._metrics_path is not None and (
            path == self._metrics_path or path == root_path + self._metrics_path
        ):
            assert self._metrics_app is not None
            await self._metrics_app(scope, receive, send)
            return
        if not self._measure:  # HTTP server instrumentation disabled: only serve metrics
            await self.app(scope, receive, send)
            return
        if self._excluded is not None and self._excluded.search(path):
            # None keeps mounted FastAPI apps from measuring the request themselves.
            mute = _TELEMETRY_KEY not in scope
            if mute:
                scope[_TELEMETRY_KEY] = None
            try:
                await self.app(scope, receive, send)
            finally:
                if mute:
                    scope.pop(_TELEMETRY_KEY, None)
            return

        method = scope["method"]
        if method not in self._known_methods:
            method = "_OTHER"
        scheme = scope.get("scheme", "http")  # ASGI: absent means http
        if scheme not in SCHEMES:
            scheme = "_OTHER"
        version = scope.get("http_version")
        if version not in VERSIONS:
            version = None
        active_key = (method, scheme)
        if self._active is not None:
            self._active.up(active_key)
        record = scope.get(_TELEMETRY_KEY)
        # FastAPI's hook starts the route with the prefix its record was made with: FastAPI's
        # own record (its tracing is on) has the root path there, otel-kit's has none.
        root = "" if record is None else scope.get("app_root_path", root_path).rstrip("/")
        owned = record is None and self._request_record is not None
        if owned:
            record = scope[_TELEMETRY_KEY] = self._request_record()  # type: ignore[misc]
        tally: _BodyTally | None = None
        if self._tally:
            tally = _BodyTally(receive, send)
            receive, send = tally.receive, tally.send
        exchange = _Exchange(self, scope, send, active_key, version, record, root, tally)
        try:
            await self.app(scope, receive, exchange.send)
        except BaseException as exc:
            if not exchange.done:
                if exchange.status is None:
                    exchange.status = 500
                if tally is not None and exchange.ended is not None:
                    # A 5xx, then the exception: Starlette's error middleware (inside) answered
                    # for the app, which sent nothing, as when it is outside: same records.
                    tally.answered = False
                exchange.finish(error_type(exc))
            raise
        else:
            if not exchange.done:  # the app returned without completing its response
                exchange.finish()
        finally:
            if owned:
                scope.pop(_TELEMETRY_KEY, None)

    def _record_tally(
        self, tally: _BodyTally, scope: Scope, key: tuple[Any, ...], start: float
    ) -> None:
        """The opt-in measurements of a finished request. Without the app's response (an
        exception before it started) there is no response size and no first byte: nothing
        is recorded for them rather than a zero that was never sent. HEAD: the app sends the
        GET's body, the server drops it: no byte is sent, none is counted."""
        head = key[0] == "HEAD"
        answered = tally.answered
        if self._body_sizes is not None:
            request, response = self._body_sizes
            request.record(tally.request_size(scope), key)
            if answered:
                response.record(0 if head else tally.response_size(), key)
        first_byte = tally.first_byte
        if self._first_byte is not None and first_byte is not None and answered and not head:
            self._first_byte.record(first_byte - start, key[:3])  # no error.type
