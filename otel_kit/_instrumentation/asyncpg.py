"""asyncpg metrics without SQLAlchemy: the duration of every statement and the state of every
`asyncpg.Pool`.

Statements: the query methods of `asyncpg.Connection` (`execute`, `executemany`, `fetch`,
`fetchval`, `fetchrow`, `fetchmany`, and the `copy_*` methods as COPY) and of
`PreparedStatement` are wrapped at class level, so every connection is measured, made before or
after setup, directly or through a pool (its proxies call the class's methods). One method call
is one operation, `db.operation.name` by the rule every DB integration uses (`_sql.py`);
`async with conn.transaction()` sends BEGIN and COMMIT/ROLLBACK as statements, measured as such.
Not measured: `prepare()` (a parse round trip, no operation), cursors, and the reset query a
pool sends to a connection it gets back (housekeeping, as SQLAlchemy's pool reset). Labels:
`db.system.name` postgresql, `db.namespace` the database, `server.address`/`server.port` the
address connected to (a Unix socket: its path, no port), `error.type` and
`db.response.status_code` (SQLSTATE) for a failed statement.

Connections SQLAlchemy's pools hold (postgresql+asyncpg) are SQLAlchemy's to measure
(`_sql.claimed`): their statements count once, there.

Pools: `Pool._acquire`, which every `acquire()` (and `Pool.execute`, `fetch`...) goes through,
gives the wait time, the pending requests and the timeouts (`acquire(timeout=...)` raising
`TimeoutError`); the idle and used counts and the maximum are read from the pool's public
`get_idle_size()`, `get_size()` and `get_max_size()` at collection. A pool is measured from its
first acquire after setup. `asyncpg.Pool` takes no weak references: a measured pool is held
until it is closed (the next collection drops it) or the instrumentation stops.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import asyncpg  # type: ignore[import-untyped]  # no type information
from asyncpg.pool import Pool  # type: ignore[import-untyped]
from asyncpg.prepared_stmt import PreparedStatement  # type: ignore[import-untyped]

from otel_kit import catalogue
from otel_kit._instrumentation._context import IntegrationContext, server_address
from otel_kit._instrumentation._db import Target, failure, query_summaries
from otel_kit._instrumentation._pools import Checkouts, pool_gauges
from otel_kit._instrumentation._sql import claimed, not_measured, suspended
from otel_kit._support import Patches, report_failure, timed

__all__ = ["instrument"]

_SYSTEM = "postgresql"
_CONNECTION_METHODS = ("execute", "executemany", "fetch", "fetchval", "fetchrow", "fetchmany")
_COPY_METHODS = ("copy_from_table", "copy_from_query", "copy_to_table", "copy_records_to_table")
_PREPARED_METHODS = ("fetch", "fetchval", "fetchrow", "fetchmany", "executemany")
_MAX_TARGETS = 256  # distinct (address, database) pairs cached; more are built per call


def _pool_name(pool: Pool) -> str:
    """`asyncpg://<host>:<port>/<database>` from the pool's connect arguments: never
    credentials (the user part of a DSN is dropped)."""
    args: Any = getattr(pool, "_connect_args", None) or [None]
    kwargs: dict[str, Any] = getattr(pool, "_connect_kwargs", None) or {}
    dsn = args[0] if args[0] is not None else kwargs.get("dsn")
    address, database = "", kwargs.get("database")
    if isinstance(dsn, str) and "://" in dsn:
        netloc, _, path = dsn.split("://", 1)[1].partition("/")
        address = unquote(netloc.rpartition("@")[2])
        database = database or unquote(path.partition("?")[0]) or None
    host, port = kwargs.get("host"), kwargs.get("port")
    if host is not None:
        hosts = host if isinstance(host, (list, tuple)) else [host]
        address = ",".join(map(str, hosts)) + (f":{port}" if port is not None else "")
    return f"asyncpg://{address}/{database or ''}"


class _PoolState:
    __slots__ = ("name", "pending", "pool")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.name = _pool_name(pool)
        self.pending = 0  # changed on the pool's event loop only


class _Instrumentation:
    def __init__(self, integration: IntegrationContext, patches: Patches) -> None:
        self.patches = patches
        self.summaries = query_summaries(integration)
        self.duration = integration.histogram(catalogue.DB_CLIENT_OPERATION_DURATION)
        self.checkouts = Checkouts(integration)
        self.targets: dict[tuple[Any, Any], Target] = {}
        self.pools: dict[int, _PoolState] = {}  # by id(): asyncpg.Pool has no __weakref__
        self.lock = threading.Lock()

    def failed(self) -> None:
        report_failure("asyncpg")

    # Statements.

    def target(self, connection: Any) -> Target:
        address, database = connection._addr, connection._params.database
        found = self.targets.get((address, database))
        if found is None:
            host, port = address if isinstance(address, tuple) else (address, None)  # or a socket
            found = Target(_SYSTEM, database, server_address(str(host)), port, self.summaries)
            if len(self.targets) < _MAX_TARGETS:
                self.targets[(address, database)] = found
        return found

    def begin(self, connection: Any, query: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not self.patches.active or suspended() or claimed(connection):
            return None
        try:
            return self.target(connection), query if isinstance(query, str) else ""
        except Exception:
            self.failed()
            return None

    def begin_copy(self, connection: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.patches.active or suspended() or claimed(connection):
            return None
        try:
            return self.target(connection), None
        except Exception:
            self.failed()
            return None

    def begin_prepared(self, statement: PreparedStatement, *args: Any, **kwargs: Any) -> Any:
        return self.begin(statement._connection, statement._query)

    def finish(
        self, state: tuple[Target, str | None], elapsed: float, result: Any, exc: Any
    ) -> None:
        try:
            target, statement = state
            errors = () if exc is None else failure(exc)
            if statement is None:  # a copy_* method
                key = target.key("COPY", *errors)
            else:
                key = target.statement_key(statement, *errors)
            self.duration.record(elapsed, key)
        except Exception:  # a metrics failure must never reach the application
            self.failed()

    # Pools.

    def begin_acquire(self, pool: Pool, timeout: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not self.patches.active:
            return None
        try:
            state = self.pools.get(id(pool)) or self.track(pool)
            state.pending += 1
            return state, timeout
        except Exception:
            self.failed()
            return None

    def finish_acquire(
        self, started: tuple[_PoolState, Any], elapsed: float, result: Any, exc: Any
    ) -> None:
        state, timeout = started
        state.pending -= 1
        try:
            timed_out = timeout is not None and isinstance(exc, asyncio.TimeoutError)
            self.checkouts.ended(state.name, elapsed, exc is not None, timed_out)
        except Exception:
            self.failed()

    def track(self, pool: Pool) -> _PoolState:
        with self.lock:
            state = self.pools.get(id(pool))
            if state is None:
                state = self.pools[id(pool)] = _PoolState(pool)
                self.checkouts.first(state.name)
        return state

    def totals(self) -> dict[str, list[int]]:
        """Pool name -> [idle, used, max, pending], summed over the open pools."""
        totals: dict[str, list[int]] = {}
        for key, state in list(self.pools.items()):
            pool = state.pool
            if pool.is_closing():
                self.pools.pop(key, None)
                continue
            idle, size = pool.get_idle_size(), pool.get_size()
            total = totals.setdefault(state.name, [0, 0, 0, 0])
            total[0] += idle
            total[1] += max(size - idle, 0)
            total[2] += pool.get_max_size()
            total[3] += max(state.pending, 0)
        return totals


def _not_measured(original: Callable[..., Any]) -> Callable[..., Any]:
    """`Connection.reset`: the queries a pool sends to a connection it gets back are no
    operation of the application's."""

    @functools.wraps(original)
    async def reset(*args: Any, **kwargs: Any) -> Any:
        with not_measured():
            return await original(*args, **kwargs)

    return reset


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Measure every asyncpg connection and pool; returns the function that stops it."""
    patches = Patches()
    instrumentation = _Instrumentation(integration, patches)

    def wrap(begin: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return lambda original: timed(original, begin, finish, is_async=True)

    finish = instrumentation.finish
    targets: list[tuple[Any, str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = []
    for owner, names, begin in (
        (asyncpg.Connection, _CONNECTION_METHODS, instrumentation.begin),
        (asyncpg.Connection, _COPY_METHODS, instrumentation.begin_copy),
        (PreparedStatement, _PREPARED_METHODS, instrumentation.begin_prepared),
    ):
        # Only what this asyncpg version has (fetchmany is newer than the others).
        targets += [(owner, name, wrap(begin)) for name in names if name in owner.__dict__]
    targets.append((asyncpg.Connection, "reset", _not_measured))
    targets.append(
        (
            Pool,
            "_acquire",
            lambda original: timed(
                original,
                instrumentation.begin_acquire,
                instrumentation.finish_acquire,
                is_async=True,
            ),
        )
    )
    patches.apply(targets)
    stop_reporting = pool_gauges(integration).add_totals(instrumentation.totals)

    def undo() -> None:
        patches.undo()
        stop_reporting()
        instrumentation.pools.clear()

    return undo
