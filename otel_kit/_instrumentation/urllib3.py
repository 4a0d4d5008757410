"""Outbound HTTP metrics for urllib3, and so for requests: `http.client.request.duration`.

requests sends every request through urllib3 (its `HTTPAdapter` calls a urllib3 pool's
`urlopen`), so it is measured here, at one level: a request made with requests counts once,
never once in requests and again in urllib3. Measured is `HTTPConnectionPool._make_request`
(HTTPS pools inherit it), wrapped at class level, so every pool and `PoolManager` (and every
requests `Session`), created before or after setup, is measured.

One measurement per ATTEMPT: `urlopen` calls `_make_request` once per try, so each retry of a
`Retry` (`Retry(total=2)`: up to 3 attempts; requests' `HTTPAdapter(max_retries=...)`) and
each redirect hop (followed by urllib3's `PoolManager` or by requests) is one measurement with
its own status or error. Waiting for a free connection of a full `block=True` pool and the
CONNECT to an HTTPS proxy happen before the attempt and are not part of it (a failed CONNECT
is not counted).

The duration runs until the response headers arrive, or until the whole body is read when
urllib3 preloads it (`preload_content=True`, urllib3's own default for `request()`; requests
streams, so headers only). Labels as `_http_client.ClientDuration` records them:
`server.address`/`server.port` are the pool's host and port (through a forwarding proxy, the
target's, from the absolute URL), `error.type` the exception the attempt raised
(`urllib3.exceptions.NewConnectionError` for a refused connection, `...ReadTimeoutError`,
`...ConnectTimeoutError`), not requests' wrapper; `network.protocol.version` from the
response (`1.1`; `2` with urllib3's HTTP/2 support). URL paths and queries are never labels.

`disabled_instrumentations`: `urllib3` turns all of this off, requests' calls included (they
are urllib3 calls); `requests` leaves out only the calls made through requests' `HTTPAdapter`
(found on the call stack, a few frames up), and direct urllib3 use stays measured. Nothing is
recorded inside OTel's `suppress_instrumentation()`, which otel-kit's own OTLP push sets.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

import urllib3
from urllib3.util import parse_url

from otel_kit._instrumentation._context import IntegrationContext
from otel_kit._instrumentation._http_client import DEFAULT_PORTS, ClientDuration, suppressed
from otel_kit._support import Patches, report_failure, timed

__all__ = ["instrument"]

# urllib3's (and http.client's) response.version -> network.protocol.version
_VERSIONS = {10: "1.0", 11: "1.1", 20: "2", 30: "3"}


def _requests_send() -> CodeType | None:
    """The code of requests' `HTTPAdapter.send`, once requests is imported (otel-kit never
    imports it: under `otel-kit run` urllib3 is instrumented while requests is importing)."""
    adapters = sys.modules.get("requests.adapters")
    adapter = getattr(adapters, "HTTPAdapter", None)
    send = getattr(adapter, "send", None)
    return getattr(send, "__code__", None)


class _Recorder:
    def __init__(self, integration: IntegrationContext, patches: Patches) -> None:
        self._patches = patches
        self._duration = ClientDuration(integration, "urllib3")
        self._skip_requests = "requests" in integration.settings.disabled_instrumentations
        self._send: CodeType | None = None

    def begin(self, pool: Any, *args: Any, **kwargs: Any) -> Any:
        # (pool, conn, method, url, ...): read in finish, where a failure is caught
        if not self._patches.active or suppressed():
            return None
        if self._skip_requests and self._from_requests():
            return None
        return pool, args, kwargs

    def _from_requests(self) -> bool:
        """Whether requests' `HTTPAdapter.send` is on the stack (walked only when "requests"
        is disabled; a wrapper around send keeps the original's code on it)."""
        if self._send is None:
            self._send = _requests_send()
            if self._send is None:
                return False
        frame: FrameType | None = sys._getframe(2)
        while frame is not None:
            if frame.f_code is self._send:
                return True
            frame = frame.f_back
        return False

    def finish(self, state: Any, elapsed: float, response: Any, exc: BaseException | None) -> None:
        try:
            pool, args, kwargs = state
            method = args[1] if len(args) > 1 else kwargs["method"]
            url = args[2] if len(args) > 2 else kwargs["url"]
            host, port, scheme = pool.host, pool.port, pool.scheme
            if not url.startswith("/"):  # absolute form: a forwarding proxy's pool
                target = parse_url(url)
                if target.host:
                    host, port, scheme = target.host.strip("[]"), target.port, target.scheme
            if port is None:
                port = DEFAULT_PORTS.get(scheme or "http")
            status = version = None
            if response is not None:
                status, version = response.status, _VERSIONS.get(response.version)
        except Exception:  # a metrics failure must never reach the application
            report_failure("urllib3")
            return
        self._duration.record(elapsed, method, host, port, status, exc, version)


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Measure every attempt urllib3's connection pools make; returns the undo."""
    patches = Patches()
    recorder = _Recorder(integration, patches)
    patches.apply(
        [
            (
                urllib3.HTTPConnectionPool,
                "_make_request",
                lambda original: timed(original, recorder.begin, recorder.finish, is_async=False),
            )
        ]
    )
    return patches.undo
