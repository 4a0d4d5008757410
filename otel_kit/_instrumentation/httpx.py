"""Outbound HTTP metrics for httpx: `http.client.request.duration`, errors included.

Why not contrib's HTTPXClientInstrumentor: it never records connection errors or timeouts and,
without `OTEL_SEMCONV_STABILITY_OPT_IN=http`, emits old names with no server label. otel-kit
wraps the transports (`HTTPTransport.handle_request`, `AsyncHTTPTransport.handle_async_request`)
at class level, so every sync and async client using them is measured, whether it was created
before or after setup, and exceptions raised by the transport (`ConnectError`, `ConnectTimeout`,
`ReadTimeout`, ...) are seen. A custom transport is measured only if it delegates to these.

The duration runs until the response HEADERS arrive: that is what the transport call covers;
httpx reads the body afterwards, so body download time and a timeout while reading the body
are not part of it. Each transport call is one measurement: retries are counted one by one.

Labels: `http.request.method` (`_OTHER` for methods the conventions do not know),
`server.address` (URL host), `server.port` (explicit, or 80/443 by scheme),
`http.response.status_code`, `error.type` (the status code for status >= 400, or the exception
class name when no response came), and `peer.service` when the `peer_services` setting maps
`host:port` or `host` to a name. URL paths and queries are never labels. An app calling many
distinct hosts is bounded by the cardinality limit: further series go to the overflow series.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping
from time import perf_counter
from typing import Any

import httpx

from otel_kit._instrumentation import IntegrationContext, error_type
from otel_kit._support import Patches, report_failure
from otel_kit.catalogue import HTTP_CLIENT_REQUEST_DURATION, KNOWN_HTTP_METHODS

__all__ = ["instrument"]

_DEFAULT_PORTS = {"http": 80, "https": 443}

SyncHandle = Callable[[httpx.HTTPTransport, httpx.Request], httpx.Response]
AsyncHandle = Callable[
    [httpx.AsyncHTTPTransport, httpx.Request], Coroutine[Any, Any, httpx.Response]
]


class _Recorder:
    def __init__(self, integration: IntegrationContext, patches: Patches) -> None:
        self._patches = patches
        self._duration = integration.histogram(HTTP_CLIENT_REQUEST_DURATION)
        self._peers: Mapping[str, str] = dict(integration.settings.peer_services)

    @property
    def active(self) -> bool:
        return self._patches.active

    def record(
        self, request: httpx.Request, start: float, status: int | None, error: str | None
    ) -> None:
        elapsed = perf_counter() - start
        try:
            method = request.method
            if method not in KNOWN_HTTP_METHODS:
                method = "_OTHER"
            url = request.url
            host = url.host
            port = url.port or _DEFAULT_PORTS.get(url.scheme)
            peer = None
            if self._peers:
                peer = self._peers.get(f"{host}:{port}") or self._peers.get(host)
            if error is None and status is not None and status >= 400:
                error = str(status)
            self._duration.record(elapsed, (method, host, port, status, error, peer))
        except Exception:  # a metrics failure must never reach the application
            report_failure("httpx")


def _sync(original: SyncHandle, recorder: _Recorder) -> SyncHandle:
    @functools.wraps(original)
    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        if not recorder.active:
            return original(self, request)
        start = perf_counter()
        try:
            response = original(self, request)
        except BaseException as exc:
            recorder.record(request, start, None, error_type(exc))
            raise
        recorder.record(request, start, response.status_code, None)
        return response

    return handle_request


def _async(original: AsyncHandle, recorder: _Recorder) -> AsyncHandle:
    @functools.wraps(original)
    async def handle_async_request(
        self: httpx.AsyncHTTPTransport, request: httpx.Request
    ) -> httpx.Response:
        if not recorder.active:
            return await original(self, request)
        start = perf_counter()
        try:
            response = await original(self, request)
        except BaseException as exc:  # CancelledError too: the call did not complete
            recorder.record(request, start, None, error_type(exc))
            raise
        recorder.record(request, start, response.status_code, None)
        return response

    return handle_async_request


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Measure every request sent through httpx's HTTP transports; returns the undo."""
    patches = Patches()
    recorder = _Recorder(integration, patches)
    patches.apply(
        [
            (httpx.HTTPTransport, "handle_request", lambda f: _sync(f, recorder)),
            (httpx.AsyncHTTPTransport, "handle_async_request", lambda f: _async(f, recorder)),
        ]
    )
    return patches.undo
