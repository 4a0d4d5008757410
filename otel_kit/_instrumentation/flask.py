"""Flask apps: the WSGI middleware around `app.wsgi_app`, told each request's route template.

`http.route` is Flask's `request.url_rule.rule`, as the app declares it (Flask's own syntax,
`/api/items/<int:item_id>`, as contrib's Flask instrumentor reports it), blueprints'
`url_prefix` included and the WSGI `SCRIPT_NAME` (a mount prefix) not, like the ASGI
middleware's root path. It is handed over when Flask starts dispatching a routed request
(`full_dispatch_request`, before any `before_request` function, one of which may answer the
request itself); an unhandled exception that Flask turns into its 500 page is reported from
`handle_exception`, so `error.type` is its class. Both are wrapped on the app instance
rather than connected to Flask's signals: a signal is sent on every request to every
receiver of every app (blinker looks each one up and inspects it), a wrapper is one call on
this app only.
"""

from __future__ import annotations

from typing import Any

import flask

from otel_kit._instrumentation._context import error_type
from otel_kit._instrumentation._http_server import warn_hidden_route
from otel_kit._instrumentation.wsgi import ERROR_KEY, ROUTE_KEY, WSGIMetricsMiddleware

__all__ = ["instrument_flask"]


def instrument_flask(
    app: flask.Flask, middleware: WSGIMetricsMiddleware, *, hidden_path: str | None = None
) -> None:
    """Measure `app` with `middleware` (built around `app.wsgi_app`). `hidden_path`: the
    metrics path the middleware answers, logged if one of the app's routes is there too (a
    route added later, as under `otel-kit run`, which instruments the app as it is created,
    is not seen)."""
    if hidden_path is not None and any(
        rule.rule == hidden_path for rule in app.url_map.iter_rules()
    ):
        warn_hidden_route(hidden_path)
    dispatch = app.full_dispatch_request
    handle_exception = app.handle_exception
    request = flask.request

    def full_dispatch_request() -> Any:
        rule = request.url_rule
        if rule is not None:
            request.environ[ROUTE_KEY] = rule.rule
        return dispatch()

    def handle_exception_of_app(e: Exception) -> Any:
        request.environ[ERROR_KEY] = error_type(e)
        return handle_exception(e)

    app.wsgi_app = middleware  # type: ignore[method-assign]
    app.full_dispatch_request = full_dispatch_request  # type: ignore[method-assign]
    app.handle_exception = handle_exception_of_app  # type: ignore[method-assign]
