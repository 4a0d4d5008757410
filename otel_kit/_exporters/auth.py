"""Credentials on the metrics endpoint: a bearer token and/or HTTP basic auth.

One check guards both places metrics are served: the app's own metrics path (ASGI, in front of
prometheus_client's ASGI app) and the separate metrics port (WSGI, in front of its WSGI app).
The presented credential and the configured one are hashed and compared with
`hmac.compare_digest`, so the time taken reveals neither their content nor their length. A
request without the right credential gets a short 401 with a `WWW-Authenticate` challenge;
the metrics are not rendered. With no credential configured nothing is wrapped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Any

from otel_kit._instrumentation.asgi import ASGIApp, Receive, Scope, Send
from otel_kit.config import Settings

__all__ = ["MetricsAuth", "WSGIApp"]

_BODY = b"401 Unauthorized: this metrics endpoint needs credentials\n"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


class MetricsAuth:
    """The credentials a scrape must present; either one is enough when both are set."""

    def __init__(self, bearer_token: str | None, basic_auth: str | None) -> None:
        self._bearer = None if bearer_token is None else _digest(bearer_token.encode())
        self._basic = None if basic_auth is None else _digest(basic_auth.encode())
        self._headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(_BODY))),
        ]
        if bearer_token is not None:
            self._headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
        if basic_auth is not None:
            self._headers.append(("WWW-Authenticate", 'Basic realm="metrics", charset="UTF-8"'))

    @classmethod
    def from_settings(cls, settings: Settings) -> MetricsAuth | None:
        """None when no credential is configured: the endpoint stays open, nothing is wrapped."""
        token, basic = settings.metrics_bearer_token, settings.metrics_basic_auth
        if token is None and basic is None:
            return None
        return cls(
            None if token is None else token.get_secret_value(),
            None if basic is None else basic.get_secret_value(),
        )

    def allows(self, authorization: bytes | None) -> bool:
        """Whether an `Authorization` header value carries a configured credential."""
        if not authorization:
            return False
        scheme, _, credential = authorization.strip().partition(b" ")
        scheme, credential = scheme.lower(), credential.strip()
        if scheme == b"bearer" and self._bearer is not None:
            return hmac.compare_digest(_digest(credential), self._bearer)
        if scheme == b"basic" and self._basic is not None:
            try:
                decoded = base64.b64decode(credential, validate=True)
            except binascii.Error:
                return False
            return hmac.compare_digest(_digest(decoded), self._basic)
        return False

    def asgi(self, app: ASGIApp) -> ASGIApp:
        """`app` behind the check (the app's metrics path)."""
        headers = [(name.lower().encode(), value.encode()) for name, value in self._headers]

        async def protected(scope: Scope, receive: Receive, send: Send) -> None:
            authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            if self.allows(authorization):
                await app(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": _BODY})

        return protected

    def wsgi(self, app: WSGIApp) -> WSGIApp:
        """`app` behind the check (the separate metrics port)."""

        def protected(
            environ: dict[str, Any], start_response: Callable[..., Any]
        ) -> Iterable[bytes]:
            authorization = environ.get("HTTP_AUTHORIZATION")  # WSGI: latin-1 decoded bytes
            if self.allows(None if authorization is None else authorization.encode("latin-1")):
                return app(environ, start_response)
            start_response("401 Unauthorized", self._headers)
            return [_BODY]

        return protected
