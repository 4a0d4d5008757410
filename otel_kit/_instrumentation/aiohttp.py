"""Outbound HTTP metrics for aiohttp's client: `http.client.request.duration`.

Why not contrib's AioHttpClientInstrumentor: it adds a `TraceConfig` to sessions created after
it, so a session made before setup (a module-level one, say) is never measured. otel-kit wraps
`ClientSession._request` at class level, the coroutine behind `get()`, `post()`, `request()`
and `ws_connect()`: every session is measured, old and new.

One measurement per `_request` call: redirects aiohttp follows inside it are part of that one
request, with the final response's status (`allow_redirects=False` to see each hop); its one
silent retry of a stale kept-alive connection too. The duration runs until the response
HEADERS arrive (`_request` returns then; the body is read afterwards, so a timeout while
reading it is not seen here). Connection errors (`aiohttp.ClientConnectorError` and its
subclasses) and timeouts (`aiohttp.ConnectionTimeoutError`, `aiohttp.SocketTimeoutError`, or
`TimeoutError` for the total timeout) are the `error.type`, as `_context.error_type()` names
them; a cancelled request is recorded with its `CancelledError`.

Labels as `_http_client.ClientDuration` records them: `server.address`/`server.port` from the
request's URL (the session's `base_url` joined), `network.protocol.version` from the response
(`1.1`). The URL is parsed after the call, outside the measured time. URL paths and queries are
never labels. `disabled_instrumentations`: `aiohttp` turns this off; nothing is recorded inside
OTel's `suppress_instrumentation()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from otel_kit._instrumentation._context import IntegrationContext
from otel_kit._instrumentation._http_client import DEFAULT_PORTS, ClientDuration, suppressed
from otel_kit._support import Patches, report_failure, timed

__all__ = ["instrument"]

_VERSIONS = {(1, 1): "1.1", (1, 0): "1.0", (2, 0): "2"}  # HttpVersion is a tuple


class _Recorder:
    def __init__(self, integration: IntegrationContext, patches: Patches) -> None:
        self._patches = patches
        self._duration = ClientDuration(integration, "aiohttp")

    def begin(self, session: Any, *args: Any, **kwargs: Any) -> Any:
        # (session, method, str_or_url, ...): read in finish, where a failure is caught
        if not self._patches.active or suppressed():
            return None
        return session, args, kwargs

    def finish(self, state: Any, elapsed: float, response: Any, exc: BaseException | None) -> None:
        try:
            session, args, kwargs = state
            method = args[0] if args else kwargs["method"]
            url = session._build_url(args[1] if len(args) > 1 else kwargs["str_or_url"])
            port = url.port or DEFAULT_PORTS.get(url.scheme)  # yarl: 80/443 by scheme
            status = version = None
            if response is not None:
                status, version = response.status, _VERSIONS.get(tuple(response.version))
        except Exception:  # a bad URL fails the request itself; never the application
            if not isinstance(exc, ValueError):  # aiohttp.InvalidURL is one
                report_failure("aiohttp")
            return
        self._duration.record(elapsed, method, url.host or "", port, status, exc, version)


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Measure every request of every aiohttp `ClientSession`; returns the undo."""
    patches = Patches()
    recorder = _Recorder(integration, patches)
    patches.apply(
        [
            (
                aiohttp.ClientSession,
                "_request",
                lambda original: timed(original, recorder.begin, recorder.finish, is_async=True),
            )
        ]
    )
    return patches.undo
