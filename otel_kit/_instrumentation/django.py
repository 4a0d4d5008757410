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
connecting, before `connection_created` (psycopg: `SET TIME ZONE` when the server's zone
differs), are not Django's: the psycopg integration counts them, once.

Cache: `get`, `get_many` and `get_or_set` of every `BaseCache` subclass Django ships (locmem,
db, file, redis, memcached, dummy) and of those already imported, wrapped at class level;
`cache.name` is the `CACHES` alias (a backend made outside `caches[...]`: `django`). The rule:
a `get` is a hit when the key is present, whatever its value (the default it returns otherwise
is a miss); `get_many` is one lookup per key; `get_or_set` one lookup (hit: present); calls a
backend makes inside these (its `get_many` for a `get`) are not lookups again, nor are
`has_key`, `incr` and the async methods' own calls (`aget` runs `get`: counted there).
A `RedisCache` counts here only: its redis-py clients' connection pools are marked as no cache
(`otel_kit.cache.redis_cache(client, None)`), so the Redis integration times their commands
but does not count their GETs in `cache_name="redis"` too.

Route: `BaseHandler.resolve_request` (every request, WSGI and ASGI) hands the matched
pattern to the HTTP middleware (under `wsgi.ROUTE_KEY` in the WSGI environ or the ASGI
scope): `resolver_match.route`, which Django joins over
`include()` prefixes, with a leading `/`; a `re_path` (DRF's routers make them) is its regex
without the `^`/`$` anchors: a pattern of the URLconf, never a path, so bounded by it. No
route for a request nothing matched (a 404 from the resolver). An exception Django turns into
its own 500 (`got_request_exception`) is the request's `error.type` (`wsgi.ERROR_KEY`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from time import perf_counter
from typing import Any

# Django's own backends are imported so they are among BaseCache's subclasses.
from django.core.cache import CacheHandler
from django.core.cache.backends import db, dummy, filebased, locmem, memcached  # noqa: F401
from django.core.cache.backends import redis as redis_backend
from django.core.cache.backends.base import BaseCache
from django.core.handlers.base import BaseHandler
from django.core.signals import got_request_exception
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from otel_kit import catalogue
from otel_kit._instrumentation._context import IntegrationContext, error_type, server_address
from otel_kit._instrumentation._db import Target, failure, query_summaries
from otel_kit._instrumentation._sql import claim, release_claims, suspended
from otel_kit._instrumentation.wsgi import ERROR_KEY, ROUTE_KEY
from otel_kit._support import Patches, report_failure
from otel_kit.cache import _REDIS_CACHE_NAME

__all__ = ["instrument", "route_template"]

_SYSTEMS = {"oracle": "oracle.db", "microsoft": "microsoft.sql_server"}
_TARGET = "_otel_kit_target"  # on a Django connection: (the _Database, its Target)
_ALIAS = "_otel_kit_cache_alias"  # on a cache backend: its CACHES alias
_UNNAMED_CACHE = "django"


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


# Inside a counted cache call: the calls the backend makes within it are no lookups of their
# own. The list gets what `get`s inside a `get_or_set` found (its first one is the lookup).
_IN_LOOKUP: ContextVar[list[bool] | None] = ContextVar("otel_kit_django_cache", default=None)
_MISSING = object()


def _cache_classes() -> Iterator[type[BaseCache]]:
    """BaseCache and every subclass imported now (Django's own are, above)."""
    seen: set[type] = set()
    todo: list[type[BaseCache]] = [BaseCache]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            yield cls
            todo.extend(cls.__subclasses__())


def _alias(cache: Any) -> str:
    alias: str | None = cache.__dict__.get(_ALIAS)
    return _UNNAMED_CACHE if alias is None else alias


class _Caches:
    def __init__(self, integration: IntegrationContext, patches: Patches) -> None:
        self.patches = patches
        self.requests = integration.sum(catalogue.CACHE_REQUESTS)

    def count(self, cache: Any, hits: int, misses: int) -> None:
        try:
            name = _alias(cache)
            if hits:
                self.requests.add(hits, (name, "hit"))
            if misses:
                self.requests.add(misses, (name, "miss"))
        except Exception:
            report_failure("Django cache")

    def _off(self) -> bool:
        return not self.patches.active or suspended()

    def wrap_get(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def get(cache: Any, key: Any, default: Any = None, version: Any = None) -> Any:
            outer = _IN_LOOKUP.get()
            if outer is None and self._off():
                return original(cache, key, default, version)
            # The sentinel tells a stored value (None too) from an absent key.
            token = _IN_LOOKUP.set([])
            try:
                value = original(cache, key, _MISSING, version)
            finally:
                _IN_LOOKUP.reset(token)
            found = value is not _MISSING
            if outer is None:
                self.count(cache, int(found), int(not found))
            else:
                outer.append(found)
            return value if found else default

        return get

    def wrap_get_many(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def get_many(cache: Any, keys: Any, version: Any = None) -> Any:
            if _IN_LOOKUP.get() is not None or self._off():
                return original(cache, keys, version)
            keys = list(keys)  # an iterator would be used up by the backend
            token = _IN_LOOKUP.set([])
            try:
                found = original(cache, keys, version)
            finally:
                _IN_LOOKUP.reset(token)
            hits = len(found)
            self.count(cache, hits, len(set(keys)) - hits)
            return found

        return get_many

    def wrap_get_or_set(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def get_or_set(cache: Any, key: Any, *args: Any, **kwargs: Any) -> Any:
            if _IN_LOOKUP.get() is not None or self._off():
                return original(cache, key, *args, **kwargs)
            seen: list[bool] = []
            token = _IN_LOOKUP.set(seen)
            try:
                value = original(cache, key, *args, **kwargs)
            finally:
                _IN_LOOKUP.reset(token)
            if seen:
                self.count(cache, int(seen[0]), int(not seen[0]))
            return value

        return get_or_set

    def targets(self) -> list[tuple[Any, str, Callable[[Callable[..., Any]], Callable[..., Any]]]]:
        wraps = {
            "get": self.wrap_get,
            "get_many": self.wrap_get_many,
            "get_or_set": self.wrap_get_or_set,
        }
        return [
            (cls, name, wrap)
            for cls in _cache_classes()
            for name, wrap in wraps.items()
            if name in cls.__dict__
        ]


def _wrap_create_connection(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_connection(handler: Any, alias: str) -> Any:
        cache = original(handler, alias)
        with contextlib.suppress(Exception):  # a backend with __slots__: counted as "django"
            cache.__dict__[_ALIAS] = alias
        return cache

    return create_connection


def _wrap_get_client(patches: Patches) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """RedisCacheClient.get_client: its clients' pools are no cache of the Redis integration's
    (their lookups count as the Django cache's)."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def get_client(cache_client: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(cache_client, *args, **kwargs)
            if patches.active:
                pool = getattr(client, "connection_pool", None)
                if pool is not None and _REDIS_CACHE_NAME not in pool.__dict__:
                    pool.__dict__[_REDIS_CACHE_NAME] = None
            return client

        return get_client

    return wrap


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


def _name_current_caches() -> None:
    from django.core.cache import caches

    try:
        for alias in caches.settings:
            cache = getattr(caches._connections, alias, None)
            if cache is not None:
                cache.__dict__.setdefault(_ALIAS, alias)
    except Exception:  # settings not configured yet: no cache exists either
        pass


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Measure Django's ORM, caches and routes; returns the function that stops it."""
    patches = Patches()
    database = _Database(integration, patches)
    caches = _Caches(integration, patches)
    patches.apply(
        [
            (BaseDatabaseWrapper, "commit", database.wrap_end("COMMIT")),
            (BaseDatabaseWrapper, "rollback", database.wrap_end("ROLLBACK")),
            (CacheHandler, "create_connection", _wrap_create_connection),
            (redis_backend.RedisCacheClient, "get_client", _wrap_get_client(patches)),
            (BaseHandler, "resolve_request", _wrap_resolve_request(patches)),
            *caches.targets(),
        ]
    )
    connection_created.connect(database.connected, weak=False)
    got_request_exception.connect(_request_failed)
    for connection in _current_connections():
        database.attach(connection)
    _name_current_caches()

    def undo() -> None:
        connection_created.disconnect(database.connected)
        got_request_exception.disconnect(_request_failed)
        patches.undo()
        database.detach(_current_connections())

    return undo
