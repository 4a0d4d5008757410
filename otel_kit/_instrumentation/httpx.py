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

Labels: as `_http_client.ClientDuration` records them for every outbound integration
(method, server address and port, status, `error.type` for a status >= 400 or the exception
when no response came, `network.protocol.version` from the response's `http_version`,
`service.peer.name` from `peer_services`). URL paths and queries are never labels. An app
calling many distinct hosts is bounded by the cardinality limit: further series go to the
overflow series. Nothing is recorded inside OTel's `suppress_instrumentation()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from otel_kit._instrumentation._context import IntegrationContext
from otel_kit._instrumentation._http_client import DEFAULT_PORTS, ClientDuration, suppressed
from otel_kit._support import Patches, report_failure, timed

__all__ = ["instrument"]

# httpx's http_version -> network.protocol.version
_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/2": "2", b"HTTP/1.0": "1.0", b"HTTP/3": "3"}


class _Recorder:
    def __init__(self, integration: IntegrationContext, patches: Patches) -> None:
        self._patches = patches
        self._duration = ClientDuration(integration, "httpx")

    def begin(self, transport: Any, request: httpx.Request) -> httpx.Request | None:
        return request if self._patches.active and not suppressed() else None

    def finish(
        self,
        request: httpx.Request,
        elapsed: float,
        response: httpx.Response | None,
        exc: BaseException | None,
    ) -> None:
        try:
            url = request.url
            status = version = None
            if response is not None:
                status = response.status_code
                http_version = response.extensions.get("http_version", b"HTTP/1.1")
                version = _VERSIONS.get(http_version)  # bounded: unknown ones are left out
            port = url.port or DEFAULT_PORTS.get(url.scheme)
        except Exception:  # a metrics failure must never reach the application
            report_failure("httpx")
            return
        self._duration.record(elapsed, request.method, url.host, port, status, exc, version)


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Measure every request sent through httpx's HTTP transports; returns the undo."""
    patches = Patches()
    recorder = _Recorder(integration, patches)

    def wrap(is_async: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return lambda original: timed(original, recorder.begin, recorder.finish, is_async=is_async)

    patches.apply(
        [
            (httpx.HTTPTransport, "handle_request", wrap(False)),
            (httpx.AsyncHTTPTransport, "handle_async_request", wrap(True)),
        ]
    )
    return patches.undo
