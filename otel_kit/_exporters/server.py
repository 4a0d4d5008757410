"""The separate metrics port (`OTEL_EXPORTER_PROMETHEUS_PORT`): prometheus_client's WSGI app on
its threading server, behind the metrics endpoint's credentials when some are configured."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from otel_kit._exporters.auth import MetricsAuth, WSGIApp

__all__ = ["DEFAULT_PORT", "start_metrics_server"]

DEFAULT_PORT = 9464  # the OTel spec's default for OTEL_EXPORTER_PROMETHEUS_PORT


def start_metrics_server(
    port: int, addr: str, registry: CollectorRegistry, auth: MetricsAuth | None
) -> WSGIServer:
    """prometheus_client's `start_http_server`, with its WSGI app behind `auth` if given.

    `start_http_server` builds its WSGI app itself and offers no way to wrap it, so this is its
    body. Its server class and quiet handler are reused; the two private names of
    prometheus_client otel-kit depends on are imported here and nowhere else.
    """
    from prometheus_client.exposition import (
        ThreadingWSGIServer,
        _get_best_family,
        _SilentHandler,
    )

    class Server(ThreadingWSGIServer):
        """Per call: the address family depends on `addr` (IPv4 or IPv6)."""

    Server.address_family, addr = _get_best_family(addr, port)  # type: ignore[no-untyped-call]
    app: WSGIApp = make_wsgi_app(registry)
    if auth is not None:
        app = auth.wsgi(app)
    server = make_server(addr, port, app, Server, handler_class=_SilentHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
