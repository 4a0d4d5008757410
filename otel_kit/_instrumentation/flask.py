"""Flask apps: the WSGI middleware around `app.wsgi_app`, told each request's route template.

`http.route` is Flask's `request.url_rule.rule`, as the app declares it (Flask's own syntax,
`/api/items/<int:item_id>`, as contrib's Flask instrumentor reports it), blueprints'
`url_prefix` included and the WSGI `SCRIPT_NAME` (a mount prefix) not, like the ASGI
middleware's root path. It is handed over on `request_started`, which Flask sends after
routing and before any `before_request` function (one of which may answer the request
itself). An unhandled exception that Flask turns into its 500 page is reported through
`got_request_exception`, so `error.type` is its class.
"""

from __future__ import annotations

from typing import Any

import flask

from otel_kit._instrumentation._context import error_type
from otel_kit._instrumentation.wsgi import ERROR_KEY, ROUTE_KEY, WSGIMetricsMiddleware

__all__ = ["instrument_flask"]


def _hand_route(sender: Any, **extra: Any) -> None:
    rule = flask.request.url_rule
    if rule is not None:
        flask.request.environ[ROUTE_KEY] = rule.rule


def _hand_error(sender: Any, exception: BaseException, **extra: Any) -> None:
    flask.request.environ[ERROR_KEY] = error_type(exception)


def instrument_flask(app: flask.Flask, middleware: WSGIMetricsMiddleware) -> None:
    """Measure `app` with `middleware` (built around `app.wsgi_app`)."""
    app.wsgi_app = middleware  # type: ignore[method-assign]
    # weak=False: the receivers are module functions, kept anyway; sender=app: other Flask
    # apps of the process (not measured, or by another middleware) are not touched.
    flask.request_started.connect(_hand_route, app, weak=False)
    flask.got_request_exception.connect(_hand_error, app, weak=False)
