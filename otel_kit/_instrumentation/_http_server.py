"""The HTTP server rules every server middleware (ASGI, WSGI) records by: the bounded values of
`url.scheme` and `network.protocol.version`, `_OTHER` for unknown methods, the status code
of a lax server's status, a 5xx status as `error.type`, the excluded paths, and the mark that
keeps a request measured once when middlewares are nested."""

from __future__ import annotations

import logging
import re
from typing import Any

from otel_kit._instruments import FastHistogram, FastSum
from otel_kit.catalogue import KNOWN_HTTP_METHODS

__all__ = [
    "ERROR_KEY",
    "MEASURED_KEY",
    "ROUTE_KEY",
    "SCHEMES",
    "VERSIONS",
    "ServerMiddleware",
    "excluded_pattern",
    "is_5xx",
    "request_key",
    "status_code",
    "warn_hidden_route",
]

_log = logging.getLogger("otel_kit")

# The values `url.scheme` and `network.protocol.version` may take: the server fills them in
# (from a proxy's X-Forwarded-Proto, too), and a lax one could put anything there.
SCHEMES = frozenset({"http", "https"})
VERSIONS = frozenset({"1.0", "1.1", "2", "3"})
# Set by the outermost middleware of a request (in the ASGI scope, the WSGI environ): inner
# ones (a mounted sub-app that is instrumented too, an app instrumented twice) pass the
# request through, so it counts once.
MEASURED_KEY = "otel_kit.measured"
# Put by a framework in the request's WSGI environ or ASGI scope, read when the request ends:
# its route TEMPLATE (Flask's url_rule.rule, Django's resolver_match.route), and the
# `error_type()` of an exception it turned into a 500 response of its own.
ROUTE_KEY = "otel_kit.route"
ERROR_KEY = "otel_kit.error_type"


def excluded_pattern(excluded_urls: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern searched in a request's path; None when no URL is excluded."""
    if not excluded_urls:
        return None
    return re.compile("|".join(f"(?:{p})" for p in excluded_urls))


def warn_hidden_route(metrics_path: str) -> None:
    """Log that the app has a route at the metrics path: the middleware answers that path
    itself, so the app's own endpoint there (prometheus-fastapi-instrumentator's,
    prometheus_flask_exporter's, a hand-written one) would be unreachable without a word."""
    _log.warning(
        "otel-kit: its metrics endpoint hides the app's own route at %s; set metrics_path "
        "(OTEL_KIT_METRICS_PATH) to another path to reach that route, or, if it serves "
        "prometheus_client metrics, metrics_include_default_registry=true "
        "(OTEL_KIT_METRICS_INCLUDE_DEFAULT_REGISTRY) to serve them on otel-kit's",
        metrics_path,
    )


def status_code(status: object) -> int | None:
    """The `http.response.status_code` of a status that is not a plain int, which ASGI
    requires but some servers do not check: an int subclass (`HTTPStatus.OK`) is its value,
    a string of three digits ("200") the status it spells; anything else gets no label."""
    if isinstance(status, int) and not isinstance(status, bool):
        return int(status)
    if isinstance(status, str) and len(status) == 3 and status.isascii() and status.isdigit():
        return int(status)
    return None


def is_5xx(status: object) -> bool:
    code = status if type(status) is int else status_code(status)
    return code is not None and code >= 500


def request_key(
    method: str,
    route: str | None,
    code: int | None,
    error: str | None,
    scheme: str,
    version: str | None,
) -> tuple[Any, ...]:
    """The attribute values of `http.server.request.duration` (catalogue order); without an
    exception, a 5xx status is the error type."""
    if error is None and code is not None and code >= 500:
        error = str(code)
    return (method, route, code, error, scheme, version)


class ServerMiddleware:
    """What the ASGI and the WSGI middleware are built from: the app they wrap, the metrics
    endpoint, and what each request records into. `active`, `body_sizes` (request, response)
    and `first_byte`: None, not recorded; `known_methods`: any other is `_OTHER`; `measure`
    False: only the metrics endpoint is served (HTTP server instrumentation disabled)."""

    def __init__(
        self,
        app: Any,
        *,
        duration: FastHistogram,
        active: FastSum | None,
        known_methods: frozenset[str] = KNOWN_HTTP_METHODS,
        metrics_path: str | None = None,
        metrics_app: Any = None,
        excluded_urls: tuple[str, ...] = (),
        measure: bool = True,
        body_sizes: tuple[FastHistogram, FastHistogram] | None = None,
        first_byte: FastHistogram | None = None,
    ) -> None:
        self.app = app
        self._duration = duration
        self._active = active
        self._known_methods = known_methods
        self._metrics_path = metrics_path if metrics_app is not None else None
        self._metrics_app = metrics_app
        self._excluded = excluded_pattern(excluded_urls)
        self._measure = measure
        self._body_sizes = body_sizes
        self._first_byte = first_byte
        self._tally = body_sizes is not None or first_byte is not None
