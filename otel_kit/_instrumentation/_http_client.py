"""`http.client.request.duration` as every outbound HTTP integration records it (httpx,
urllib3, aiohttp): one rule for the method, server, status, error and peer labels."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_current

from otel_kit._instrumentation._context import IntegrationContext, error_type, server_address
from otel_kit._support import report_failure
from otel_kit.catalogue import HTTP_CLIENT_REQUEST_DURATION

__all__ = ["DEFAULT_PORTS", "ClientDuration", "suppressed"]

DEFAULT_PORTS = {"http": 80, "https": 443}


def suppressed() -> bool:
    """Whether the current OTel context suppresses instrumentation: otel-kit's own push sets it
    (the OTLP/HTTP exporter sends through requests, and its exports are no call of the app's),
    as does `opentelemetry.instrumentation.utils.suppress_instrumentation()`. Not the HTTP-only
    key: contrib's requests instrumentor sets that around the urllib3 calls it measures, and
    otel-kit keeps its own measurement and drops contrib's (`_dedup`)."""
    return bool(get_current().get(_SUPPRESS_INSTRUMENTATION_KEY))


class ClientDuration:
    """Records one outbound request (or attempt) into the shared histogram.

    Labels: `http.request.method` (`_OTHER` for a method not in `http_known_methods`),
    `server.address` (`_OTHER` beyond 255 characters), `server.port`,
    `http.response.status_code`, `error.type` (the exception when no response came, else the
    status code from 400 on), `network.protocol.version`, and `service.peer.name` when
    `peer_services` maps `host:port` or `host` to a name.
    """

    def __init__(self, integration: IntegrationContext, what: str) -> None:
        self._what = what  # the integration's name, for report_failure
        self._histogram = integration.histogram(HTTP_CLIENT_REQUEST_DURATION)
        self._methods = frozenset(integration.settings.http_known_methods)
        self._peers: Mapping[str, str] = dict(integration.settings.peer_services)

    def record(
        self,
        elapsed: float,
        method: str,
        host: str,
        port: int | None,
        status: int | None,
        exc: BaseException | None,
        version: str | None,
    ) -> None:
        """Never raises: a failure is reported once and the application goes on."""
        try:
            if method not in self._methods:
                method = "_OTHER"
            host = server_address(host)
            peer = None
            if self._peers:
                peer = self._peers.get(f"{host}:{port}") or self._peers.get(host)
            error = None if exc is None else error_type(exc)
            if error is None and status is not None and status >= 400:
                error = str(status)
            self._histogram.record(elapsed, (method, host, port, status, error, version, peer))
        except Exception:  # a metrics failure must never reach the application
            report_failure(self._what)
