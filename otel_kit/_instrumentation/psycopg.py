"""psycopg 3 metrics without SQLAlchemy: the duration of every statement of sync and async
connections, and the state of every `psycopg_pool` pool.

Statements: `execute` and `executemany` of `Cursor`, `AsyncCursor` and the server-side cursors
are wrapped at class level (`Connection.execute` goes through them), so every connection is
measured, made before or after setup. `db.operation.name` follows the rule every DB integration
uses (`_sql.py`), from the query as text (`str`, `bytes`, `sql.Composable`, a template's first
part). Transaction commands psycopg sends itself are measured too, from the one method sending
them (`_exec_command`): `commit()`/`rollback()` as COMMIT/ROLLBACK (nothing when no transaction
is open: psycopg sends nothing then), and a `with conn.transaction()` block's BEGIN,
SAVEPOINT, RELEASE, COMMIT or ROLLBACK. The BEGIN psycopg sends before the first statement of
an implicit transaction is part of that statement's time, not an operation of its own. Not
measured: `stream()` and `copy()` (their time is the caller's iteration), and the DEALLOCATE
psycopg sends to empty its prepared-statement cache, and the empty query of
`ConnectionPool.check_connection` (a liveness probe). A server-side cursor's `execute` is its
DECLARE, named by the query (SELECT); each fetch is a FETCH, and its close a CLOSE. In pipeline
mode an `execute` only queues its statement: its duration is the queueing. Labels:
`db.system.name` postgresql, `db.namespace` the database, `server.address`/`server.port` from
the connection (a Unix socket: its directory), `error.type` and `db.response.status_code`
(SQLSTATE).

Connections SQLAlchemy's pools hold (postgresql+psycopg) are SQLAlchemy's to measure
(`_sql.claimed`): their statements count once, there.

Pools (when `psycopg_pool` is installed): `getconn()` of `ConnectionPool` and
`AsyncConnectionPool` (their `connection()` and the null pools' go through it) gives the wait
time, the pending requests and the timeouts (`PoolTimeout`); the idle and used counts and the
maximum are the pool's own `get_stats()` (`pool_available`, `pool_size` minus it: connections
being opened count as used) and `max_size`, read at collection.
`db.client.connection.pool.name` is the pool's `name` when the application gave one, else
`psycopg://<host>:<port>/<dbname>` from its conninfo (never credentials). A pool is measured
from its first `getconn()` after setup.
"""

from __future__ import annotations

import functools
import re
import threading
import weakref
from collections.abc import Callable, Generator, Iterable
from contextvars import ContextVar
from time import perf_counter
from typing import Any

import psycopg
from opentelemetry.metrics import CallbackOptions, Observation
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from otel_kit import catalogue
from otel_kit._instrumentation._context import IntegrationContext, server_address
from otel_kit._instrumentation._db import (
    QuerySummaries,
    Target,
    failure,
    pool_attributes,
    pool_key,
)
from otel_kit._instrumentation._pools import pool_gauges
from otel_kit._instrumentation._sql import claimed, suspended
from otel_kit._support import Patches, report_failure, timed

psycopg_pool: Any
try:
    import psycopg_pool
except ImportError:  # psycopg without its pool package: statements only
    psycopg_pool = None

__all__ = ["instrument"]

_SYSTEM = "postgresql"
_TARGET = "_otel_kit_target"  # on a connection: (the _Instrumentation, its Target), built once
_POOL_STATE = "_otel_kit_pool_state"  # on a pool: its _PoolState
_AUTOMATIC_POOL_NAME = re.compile(r"pool-\d+")  # psycopg_pool's name for an unnamed pool
# Inside a measured cursor call: the commands psycopg sends within it (the implicit BEGIN) are
# part of that operation.
_IN_OPERATION: ContextVar[bool] = ContextVar("otel_kit_psycopg_operation", default=False)


def _text(query: Any, connection: Any) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    if isinstance(query, sql.Composable):
        return query.as_string(connection)
    strings = getattr(query, "strings", None)  # a t-string Template (psycopg 3.3)
    return strings[0] if isinstance(strings, tuple) and strings else ""


def _pool_name(pool: Any) -> str:
    name = str(pool.name)
    if not _AUTOMATIC_POOL_NAME.fullmatch(name):
        return name
    conninfo = pool.conninfo if isinstance(pool.conninfo, str) else ""
    kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else {}
    params = conninfo_to_dict(conninfo, **kwargs)
    host = str(params.get("host", "")) + (f":{params['port']}" if params.get("port") else "")
    return f"psycopg://{host}/{params.get('dbname', '')}"


class _PoolState:
    __slots__ = ("__weakref__", "lock", "name", "owner", "pending")

    def __init__(self, owner: _Instrumentation, pool: Any) -> None:
        self.owner = owner
        self.name = _pool_name(pool)
        # Counted here: the pool's requests_waiting keeps a request that timed out until a
        # connection comes back.
        self.pending = 0
        self.lock = threading.Lock()  # sync pools are shared by threads


class _Instrumentation:
    def __init__(self, integration: IntegrationContext, patches: Patches) -> None:
        self.patches = patches
        settings = integration.settings
        self.summaries = (
            QuerySummaries(settings.cardinality_limit) if settings.db_query_summary else None
        )
        self.duration = integration.histogram(catalogue.DB_CLIENT_OPERATION_DURATION)
        self.wait_time = integration.histogram(catalogue.DB_CLIENT_CONNECTION_WAIT_TIME)
        self.timeouts = integration.sum(catalogue.DB_CLIENT_CONNECTION_TIMEOUTS)
        self.pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self.lock = threading.Lock()

    def failed(self) -> None:
        report_failure("psycopg")

    # Statements.

    def target(self, connection: Any) -> Target:
        found = connection.__dict__.get(_TARGET)
        if found is not None and found[0] is self:
            target: Target = found[1]
            return target
        info = connection.info
        host = server_address(info.host)
        target = Target(_SYSTEM, info.dbname or None, host, info.port, self.summaries)
        connection.__dict__[_TARGET] = (self, target)
        return target

    def _skip(self, connection: Any) -> bool:
        return not self.patches.active or suspended() or claimed(connection)

    def begin(self, cursor: Any, query: Any = None, *args: Any, **kwargs: Any) -> Any:
        connection = cursor.connection
        # "": psycopg_pool's check_connection(), a liveness probe, no operation.
        if self._skip(connection) or _IN_OPERATION.get() or query == "":
            return None
        try:
            state = self.target(connection), _text(query, connection)
        except Exception:
            self.failed()
            return None
        return (*state, _IN_OPERATION.set(True))

    def finish(self, state: Any, elapsed: float, result: Any, exc: BaseException | None) -> None:
        target, statement, token = state
        _IN_OPERATION.reset(token)
        self.record(target, statement, elapsed, exc)

    def record(
        self, target: Target, statement: str, elapsed: float, exc: BaseException | None
    ) -> None:
        try:
            errors = () if exc is None else failure(exc)
            self.duration.record(elapsed, target.statement_key(statement, *errors))
        except Exception:  # a metrics failure must never reach the application
            self.failed()

    def wrap_command(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """`_exec_command(connection, command, ...)`, a generator psycopg drives to the
        command's result: timed from its first step to its last."""

        @functools.wraps(original)
        def exec_command(connection: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
            commands = original(connection, command, *args, **kwargs)
            if self._skip(connection) or _IN_OPERATION.get():
                return commands
            try:
                target, statement = self.target(connection), _text(command, connection)
            except Exception:
                self.failed()
                return commands
            if statement.startswith("DEALLOCATE"):  # psycopg emptying its statement cache
                return commands
            return self._timed_command(commands, target, statement)

        return exec_command

    def _timed_command(
        self, commands: Generator[Any, Any, Any], target: Target, statement: str
    ) -> Generator[Any, Any, Any]:
        start = perf_counter()
        try:
            result = yield from commands
        except BaseException as exc:
            self.record(target, statement, perf_counter() - start, exc)
            raise
        self.record(target, statement, perf_counter() - start, None)
        return result

    # Pools.

    def begin_getconn(self, pool: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.patches.active:
            return None
        try:
            state = pool.__dict__.get(_POOL_STATE)
            if state is None or state.owner is not self:
                state = self.track(pool)
            with state.lock:
                state.pending += 1
            return state
        except Exception:
            self.failed()
            return None

    def finish_getconn(self, state: _PoolState, elapsed: float, result: Any, exc: Any) -> None:
        with state.lock:
            state.pending -= 1
        if suspended():
            return
        try:
            if exc is None:
                self.wait_time.record(elapsed, pool_key(state.name))
            elif isinstance(exc, psycopg_pool.PoolTimeout):
                self.timeouts.add(1, pool_key(state.name))
        except Exception:
            self.failed()

    def track(self, pool: Any) -> _PoolState:
        with self.lock:
            state: _PoolState | None = pool.__dict__.get(_POOL_STATE)
            if state is None or state.owner is not self:
                state = _PoolState(self, pool)
                pool.__dict__[_POOL_STATE] = state
                self.pools.add(pool)
                self.timeouts.add(0, pool_key(state.name))  # the series, before the first
        return state

    def _current(self) -> dict[str, list[int]]:
        """pool name -> [idle, used, max, pending], summed over the open pools."""
        totals: dict[str, list[int]] = {}
        for pool in list(self.pools):
            state = pool.__dict__.get(_POOL_STATE)
            if pool.closed or state is None:
                continue
            stats = pool.get_stats()
            idle = stats.get("pool_available", 0)
            total = totals.setdefault(state.name, [0, 0, 0, 0])
            total[0] += idle
            total[1] += max(stats.get("pool_size", 0) - idle, 0)
            total[2] += pool.max_size
            total[3] += max(state.pending, 0)
        return totals

    def observe_count(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, pool_attributes(name, kind))
            for name, total in self._current().items()
            for kind, count in (("idle", total[0]), ("used", total[1]))
        ]

    def observe_max(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(t[2], pool_attributes(n)) for n, t in self._current().items()]

    def observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(t[3], pool_attributes(n)) for n, t in self._current().items()]


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Measure every psycopg connection and psycopg_pool pool; returns the undo."""
    patches = Patches()
    instrumentation = _Instrumentation(integration, patches)
    begin, finish = instrumentation.begin, instrumentation.finish
    targets: list[tuple[Any, str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = []
    for cursor, names, is_async in (
        (psycopg.Cursor, ("execute", "executemany"), False),
        (psycopg.AsyncCursor, ("execute", "executemany"), True),
        # Their own execute (a DECLARE); their executemany only raises NotSupportedError.
        (psycopg.ServerCursor, ("execute",), False),
        (psycopg.AsyncServerCursor, ("execute",), True),
    ):
        wrap = functools.partial(timed, begin=begin, finish=finish, is_async=is_async)
        targets += [(cursor, name, wrap) for name in names]
    # The base class of both connection classes (its module is private, and moved in 3.2).
    base = next(c for c in psycopg.Connection.__mro__ if "_exec_command" in c.__dict__)
    targets.append((base, "_exec_command", instrumentation.wrap_command))
    if psycopg_pool is not None:
        for pool, is_async in (
            (psycopg_pool.ConnectionPool, False),
            (psycopg_pool.AsyncConnectionPool, True),
        ):
            wrap = functools.partial(
                timed,
                begin=instrumentation.begin_getconn,
                finish=instrumentation.finish_getconn,
                is_async=is_async,
            )
            targets.append((pool, "getconn", wrap))
    patches.apply(targets)
    gauges = pool_gauges(integration)
    callbacks = (
        (catalogue.DB_CLIENT_CONNECTION_COUNT, instrumentation.observe_count),
        (catalogue.DB_CLIENT_CONNECTION_MAX, instrumentation.observe_max),
        (catalogue.DB_CLIENT_CONNECTION_PENDING_REQUESTS, instrumentation.observe_pending),
    )
    for spec, callback in callbacks:
        gauges.add(spec, callback)

    def undo() -> None:
        patches.undo()
        for spec, callback in callbacks:
            gauges.remove(spec, callback)
        instrumentation.pools.clear()

    return undo
