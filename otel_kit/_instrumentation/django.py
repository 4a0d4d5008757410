"""Django metrics without swapping `ENGINE` or `CACHES`: ORM statements, cache lookups and the
route template of each request (the HTTP middleware records the request itself).

ORM: one execute wrapper (Django's `connection.execute_wrapper` mechanism) in every
connection's `execute_wrappers`, put there when the connection connects (`connection_created`)
and at setup for the connections this thread already has. It is the list's first entry, the
outermost: `execute_wrapper()` blocks push and pop at its end, which must never pop it.
`db.operation.name` follows the rule every DB integration uses (`_sql.py`); `db.system.name`
is the backend's vendor (postgresql, sqlite, mysql or mariadb, oracle.db); `db.namespace` the
database NAME (SQLite: the file's base name); `server.address`/`server.port` HOST and PORT as
configured (none for SQLite). A failed statement carries the driver's exception (Django raises
its own class `from` it): `error.type` `psycopg.errors.UniqueViolation`,
`db.response.status_code` its SQLSTATE. `commit()`/`rollback()` of a transaction (an
`atomic()` block's end) are COMMIT/ROLLBACK; in autocommit mode they send nothing, and count
nothing. Savepoints are SQL Django sends through the cursor: SAVEPOINT, RELEASE, ROLLBACK.
The driver connection under a measured Django connection is claimed (`_sql.claim`), so the
psycopg integration does not count its statements again; the statements a backend sends while
connecting, before `connection_created` (PostgreSQL: `SELECT set_config('TimeZone', ...)` when
the session's zone is not TIME_ZONE), are not Django's: the psycopg integration counts them.

Cache: hits and misses of every Django cache backend by `CACHES` alias (`django_cache.py`).

Requests: `measure_handlers(handle)` sends every `WSGIHandler` and `ASGIHandler` (made
before or after it) through the handle's WSGI or ASGI middleware, built on the handler's first
request; `setup()` is `setup_metrics()` for that, metrics on the app's metrics path unless a
port is configured (`INSTALLED_APPS += ["otel_kit.django"]` calls it).

Route: `BaseHandler.resolve_request` (every request, WSGI and ASGI) hands the matched
pattern to the HTTP middleware (under `wsgi.ROUTE_KEY` in the WSGI environ or the ASGI
scope): `resolver_match.route`, which Django joins over
`include()` prefixes, with a leading `/`; a `re_path` (DRF's routers make them) is its regex
without the `^`/`$` anchors: a pattern of the URLconf, never a path, so bounded by it. No
route for a request nothing matched (a 404 from the resolver). An exception Django turns into
its own 500 (`got_request_exception`) is the request's `error.type` (`wsgi.ERROR_KEY`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from django.core.handlers.base import BaseHandler
from django.core.signals import got_request_exception
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from otel_kit import catalogue
from otel_kit._instrumentation._context import IntegrationContext, error_type, server_address
from otel_kit._instrumentation._db import Target, failure, query_summaries
from otel_kit._instrumentation._http_server import ERROR_KEY, ROUTE_KEY
from otel_kit._instrumentation._sql import claim, release_claims, suspended
from otel_kit._instrumentation.django_cache import cache_targets, name_current_caches
from otel_kit._support import Patches, report_failure

if TYPE_CHECKING:
    from otel_kit._setup import MetricsHandle

__all__ = ["instrument", "measure_handlers", "route_template", "setup"]

_SYSTEMS = {"oracle": "oracle.db", "microsoft": "microsoft.sql_server"}
_TARGET = "_otel_kit_target"  # on a Django connection: (the _Database, its Target)


def _system(connection: Any) -> str:
    vendor = str(connection.vendor)
    if vendor == "mysql" and getattr(connection, "mysql_is_mariadb", False):
        return "mariadb"
    return _SYSTEMS.get(vendor, vendor)


def _target(connection: Any, summaries: Any) -> Target:
    settings = connection.settings_dict
    name = settings.get("NAME")
    if connection.vendor == "sqlite":
        memory = not name or name == ":memory:" or "mode=memory" in str(name)
        return Target("sqlite", ":memory:" if memory else os.path.basename(str(name)), None, None)
    host = settings.get("HOST") or None
    address = None if host is None else server_address(str(host))
    port = settings.get("PORT") or None
    port = int(port) if address is not None and port is not None else None
    return Target(_system(connection), str(name) if name else None, address, port, summaries)


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's exception Django's `DatabaseErrorWrapper` raised its own class from."""
    cause = exc.__cause__
    if type(exc).__module__ == "django.db.utils" and cause is not None:
        return cause
    return exc


class _Database:
    def __init__(self, integration: IntegrationContext, patches: Patches) -> None:
        self.patches = patches
        self.summaries = query_summaries(integration)
        self.duration = integration.histogram(catalogue.DB_CLIENT_OPERATION_DURATION)

    def target(self, connection: Any) -> Target:
        found = connection.__dict__.get(_TARGET)
        if found is not None and found[0] is self:
            target: Target = found[1]
            return target
        target = _target(connection, self.summaries)
        connection.__dict__[_TARGET] = (self, target)
        return target

    def record(
        self, connection: Any, statement: Any, elapsed: float, exc: BaseException | None
    ) -> None:
        try:
            errors = () if exc is None else failure(_driver_error(exc))
            text = statement if isinstance(statement, str) else str(statement)
            self.duration.record(elapsed, self.target(connection).statement_key(text, *errors))
        except Exception:  # a metrics failure must never reach the application
            report_failure("Django ORM")

    def __call__(self, execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        """The execute wrapper (Django's signature)."""
        if not self.patches.active or suspended():
            return execute(sql, params, many, context)
        start = perf_counter()
        try:
            result = execute(sql, params, many, context)
        except BaseException as exc:
            self.record(context["connection"], sql, perf_counter() - start, exc)
            raise
        self.record(context["connection"], sql, perf_counter() - start, None)
        return result

    def attach(self, connection: Any) -> None:
        """Measure `connection` (a Django DatabaseWrapper): the wrapper, the driver's claim."""
        try:
            wrappers = connection.execute_wrappers
            if self not in wrappers:
                wrappers.insert(0, self)
            if connection.connection is not None:
                claim(connection.connection, self)
        except Exception:
            report_failure("Django ORM")

    def connected(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        if self.patches.active:
            self.attach(connection)

    def detach(self, connections: Iterable[Any]) -> None:
        for connection in connections:
            if self in connection.execute_wrappers:
                connection.execute_wrappers.remove(self)
        release_claims(self)

    def wrap_end(self, operation: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """`commit()`/`rollback()`: timed when a transaction is open (not in autocommit)."""

        def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(original)
            def end(connection: Any) -> Any:
                if (
                    not self.patches.active
                    or suspended()
                    or connection.connection is None
                    or connection.autocommit
                    or self not in connection.execute_wrappers
                ):
                    return original(connection)
                start = perf_counter()
                try:
                    result = original(connection)
                except BaseException as exc:
                    self.record_end(connection, operation, perf_counter() - start, exc)
                    raise
                self.record_end(connection, operation, perf_counter() - start, None)
                return result

            return end

        return wrap

    def record_end(
        self, connection: Any, operation: str, elapsed: float, exc: BaseException | None
    ) -> None:
        try:
            errors = () if exc is None else failure(_driver_error(exc))
            self.duration.record(elapsed, self.target(connection).key(operation, *errors))
        except Exception:
            report_failure("Django ORM")


def route_template(route: str) -> str:
    """`http.route` of a Django `ResolverMatch.route`: a leading `/`; a regex's anchors off."""
    route = route.removeprefix("^")  # Django drops the inner ones when it joins patterns
    if route.endswith("\\Z"):
        route = route[:-2]
    elif route.endswith("$") and not route.endswith("\\$"):
        route = route[:-1]
    return "/" + route


def _carrier(request: Any) -> dict[str, Any]:
    """The dict the HTTP middleware reads: the ASGI scope (an ASGIRequest's META is a copy),
    else the WSGI environ."""
    scope = getattr(request, "scope", None)
    carrier: dict[str, Any] = scope if isinstance(scope, dict) else request.environ
    return carrier


def _wrap_resolve_request(patches: Patches) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def resolve_request(handler: Any, request: Any) -> Any:
            match = original(handler, request)  # raises Resolver404: no route
            if patches.active:
                try:
                    route = match.route
                    if isinstance(route, str):
                        _carrier(request)[ROUTE_KEY] = route_template(route)
                except Exception:
                    report_failure("Django route")
            return match

        return resolve_request

    return wrap


def _request_failed(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """`got_request_exception`: Django answers with a 500 of its own; its error type is the
    exception's class, as when an exception reaches the server."""
    exc = sys.exc_info()[1]
    if request is not None and exc is not None:
        try:
            _carrier(request)[ERROR_KEY] = error_type(exc)
        except Exception:
            report_failure("Django route")


def _current_connections() -> list[Any]:
    from django.db import connections

    try:
        return list(connections.all(initialized_only=True))
    except Exception:  # settings not configured yet: no connection exists either
        return []


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Measure Django's ORM, caches and routes; returns the function that stops it."""
    patches = Patches()
    database = _Database(integration, patches)
    patches.apply(
        [
            (BaseDatabaseWrapper, "commit", database.wrap_end("COMMIT")),
            (BaseDatabaseWrapper, "rollback", database.wrap_end("ROLLBACK")),
            (BaseHandler, "resolve_request", _wrap_resolve_request(patches)),
            *cache_targets(integration, patches),
        ]
    )
    connection_created.connect(database.connected, weak=False)
    got_request_exception.connect(_request_failed)
    for connection in _current_connections():
        database.attach(connection)
    name_current_caches()

    def undo() -> None:
        connection_created.disconnect(database.connected)
        got_request_exception.disconnect(_request_failed)
        patches.undo()
        database.detach(_current_connections())

    return undo


# On WSGIHandler and ASGIHandler: measured. On a handler: (the handle, its middleware).
_PATCHED = "_otel_kit_patched"
_MIDDLEWARE = "_otel_kit_middleware"
_measuring: list[MetricsHandle] = []  # the handle the patched handlers measure with


def _middleware(handler: Any, original: Callable[..., Any]) -> Any:
    """`handler`'s middleware around `original` (its own __call__), for the current handle;
    None: call `original` unmeasured."""
    handle = _measuring[-1]
    found = handler.__dict__.get(_MIDDLEWARE)
    if found is not None and found[0] is handle:
        return found[1]
    try:
        app = handle.instrument_app(functools.partial(original, handler))
    except Exception:
        report_failure("Django HTTP server")
        return None
    handler.__dict__[_MIDDLEWARE] = (handle, app)
    return app


def _measured_call(original: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    if is_async:

        @functools.wraps(original)
        async def asgi_call(handler: Any, scope: Any, receive: Any, send: Any) -> None:
            app = _middleware(handler, original)
            if app is None:
                await original(handler, scope, receive, send)
            else:
                await app(scope, receive, send)

        return asgi_call

    @functools.wraps(original)
    def wsgi_call(handler: Any, environ: Any, start_response: Any) -> Any:
        app = _middleware(handler, original)
        if app is None:
            return original(handler, environ, start_response)
        return app(environ, start_response)

    return wsgi_call


def measure_handlers(handle: MetricsHandle) -> None:
    """Measure every Django WSGI and ASGI handler, made before or after, with `handle`."""
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    _measuring[:] = [handle]
    for cls, is_async in ((WSGIHandler, False), (ASGIHandler, True)):
        if _PATCHED not in cls.__dict__:
            setattr(cls, _PATCHED, True)
            cls.__call__ = _measured_call(cls.__call__, is_async)


def setup(**settings: Any) -> MetricsHandle:
    """`setup_metrics()` for a Django project: its handlers measured, with the metrics on their
    metrics path unless a port is configured. Idempotent, as `setup_metrics()`."""
    from otel_kit import _setup
    from otel_kit.config import load_settings

    with _setup._lock:
        handle = _setup._current
        if handle is None:
            config = load_settings(settings)
            handle = _setup._install(config, serve_on_app=config.prometheus_port is None)
        elif settings:
            _setup._warn_ignored(handle.settings, settings)
    measure_handlers(handle)
    return handle
