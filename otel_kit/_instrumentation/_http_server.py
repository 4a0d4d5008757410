"""The HTTP server rules every server middleware (ASGI, WSGI) records by: the bounded values of
`url.scheme` and `network.protocol.version`, `_OTHER` for unknown methods, the status code
of a lax server's status, a 5xx status as `error.type`, the excluded paths, and the mark that
keeps a request measured once when middlewares are nested."""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "MEASURED_KEY",
    "SCHEMES",
    "VERSIONS",
    "excluded_pattern",
    "is_5xx",
    "request_key",
    "status_code",
]

# The values `url.scheme` and `network.protocol.version` may take: the server fills them in
# (from a proxy's X-Forwarded-Proto, too), and a lax one could put anything there.
SCHEMES = frozenset({"http", "https"})
VERSIONS = frozenset({"1.0", "1.1", "2", "3"})
# Set by the outermost middleware of a request (in the ASGI scope, the WSGI environ): inner
# ones (a mounted sub-app that is instrumented too, an app instrumented twice) pass the
# request through, so it counts once.
MEASURED_KEY = "otel_kit.measured"


def excluded_pattern(excluded_urls: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern searched in a request's path; None when no URL is excluded."""
    if not excluded_urls:
        return None
    return re.compile("|".join(f"(?:{p})" for p in excluded_urls))


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
