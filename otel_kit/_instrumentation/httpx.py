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
`server.address` (URL host; `_OTHER` for a host longer than 255 characters, the DNS maximum,
so a label's size stays bounded), `server.port` (explicit, or 80/443 by scheme),
`http.response.status_code`, `error.type` (the status code for status >= 400, or the exception
class name when no response came), and `peer.service` when the `peer_services` setting maps
`host:port` or `host` to a name. URL paths and queries are never labels. An app calling many
distinct hosts is bounded by the cardinality limit: further series go to the overflow series.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from otel_kit._instrumentation._context import IntegrationContext, error_type, server_address
from otel_kit._support import Patches, report_failure, timed
from otel_kit.catalogue import HTTP_CLIENT_REQUEST_DURATION, KNOWN_HTTP_METHODS

__all__ = ["instrument"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Recorder:
    def __init__(self, integration: IntegrationContext, patches: Patches) -> None:
        self._patches = patches
        self._duration = integration.histogram(HTTP_CLIENT_REQUEST_DURATION)
        self._peers: Mapping[str, str] = dict(integration.settings.peer_services)

    def begin(self, transport: Any, request: httpx.Request) -> httpx.Request | None:
        return request if self._patches.active else None

    def finish(
        self,
        request: httpx.Request,
        elapsed: float,
        response: httpx.Response | None,
        exc: BaseException | None,
    ) -> None:
        try:
            method = request.method
            if method not in KNOWN_HTTP_METHODS:
                method = "_OTHER"
            url = request.url
            host = server_address(url.host)
            port = url.port or _DEFAULT_PORTS.get(url.scheme)
            peer = None
            if self._peers:
                peer = self._peers.get(f"{host}:{port}") or self._peers.get(host)
            status = None if response is None else response.status_code
            error = None if exc is None else error_type(exc)
            if error is None and status is not None and status >= 400:
                error = str(status)
            self._duration.record(elapsed, (method, host, port, status, error, peer))
        except Exception:  # a metrics failure must never reach the application
            report_failure("httpx")


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
