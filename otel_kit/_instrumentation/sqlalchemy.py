"""SQLAlchemy metrics: the duration of every statement and the state of every connection pool.

Why not contrib's SQLAlchemyInstrumentor: it emits only the deprecated
`db.client.connections.usage`, no operation duration, and refuses SQLAlchemy 2.1.

Statements: the DB-API calls of each engine's dialect (`do_execute`, `do_executemany`,
`do_execute_no_params`) are timed, wrapped on the dialect instance when the engine first hands out
a connection. Engine events would be simpler, but one statement listener on `Engine` puts every
connection on SQLAlchemy's slower event path (+12 µs per connect-and-query measured on 2.1), and
even `handle_error` is a dialect event (2.0, 2.1): it sets `_has_events` on every dialect, and
each statement then runs the dialect's empty `do_execute` listeners. Failures are recorded by the
wrapped calls instead, with the driver's exception (not SQLAlchemy's wrapper: `error.type`
`psycopg.errors.UniqueViolation`) and its SQLSTATE as `db.response.status_code`.
`server.address`/`server.port` are the engine URL's, as configured. An "insertmanyvalues"
`execute()` (several cursor batches) is timed once around all its batches.

Transaction ends: `db.operation.name` COMMIT or ROLLBACK, timed around the private `Connection`
methods every commit and rollback of a `Connection`, `Session` or `AsyncConnection` goes through
(`_commit_impl`, `_rollback_impl`), so a rollback that closes a connection with its transaction
still open counts too (the database rolls it back: PostgreSQL counts it in `xact_rollback`). Not
the dialect's `do_commit`/`do_rollback`: the pool calls those too, to reset a connection it gets
back, usually with no transaction left to end. Nothing is recorded in AUTOCOMMIT isolation (the
driver's commit does nothing then). Savepoints are statements SQLAlchemy sends as SQL, measured
as such (SAVEPOINT, RELEASE, ROLLBACK); COMMIT sent as SQL text is one statement, never counted
again as a transaction end.

Pools: every engine gets its connections through `Engine.raw_connection()`, whatever the pool
class. Wrapping that one public method gives the wait time, the pending requests, the checkout
timeouts (`QueuePool` raises `sqlalchemy.exc.TimeoutError`; no pool event reports it) and the
engine's URL for `db.client.connection.pool.name`. A connection checked out there is marked in
its pool entry's `record_info`; `close`/`detach` events on the `Pool` class clear the marks,
and so does a wrapper on `_ConnectionRecord.checkin` (private, the same in 2.0 and 2.1), where
every pool class gets its connections back (invalidated, recycled, garbage-collected or async
ones too) and dispatches its `checkin` event: the event's work without the event's dispatch, on
every connection returned. That keeps the used/idle counts right for every pool class. Pools
are held weakly; a pool its engine replaced (`engine.dispose()`) leaves the gauges at once. A
pool's timeouts counter exists at 0 from its first connection, so `rate()` and alerts work
before the first timeout.

Inside `otel_kit.not_measured()` (a context variable) statements, transaction ends, waits and
timeouts are not recorded; the used/idle/pending counts still are (they are state, and a
connection checked out inside may be returned outside).
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine, ExecutionContext
from sqlalchemy.pool import AssertionPool, Pool, PoolProxiedConnection, QueuePool, StaticPool
from sqlalchemy.pool.base import _ConnectionRecord

from otel_kit import catalogue
from otel_kit._instrumentation._context import IntegrationContext, server_address
from otel_kit._instrumentation._db import (
    QuerySummaries,
    Target,
    failure,
    pool_attributes,
    pool_key,
)
from otel_kit._instrumentation._pools import Tally, pool_gauges
from otel_kit._instrumentation._sql import claim, release_claims, suspended
from otel_kit._instruments import FastHistogram, FastSum
from otel_kit._support import Patches, report_failure

__all__ = ["instrument", "instrument_engine"]


_SYSTEMS = {"mssql": "microsoft.sql_server", "oracle": "oracle.db"}


def _namespace(engine: Engine) -> str | None:
    database = engine.url.database
    if engine.dialect.name == "sqlite":
        return os.path.basename(database) if database else ":memory:"
    return database or None


def _pool_name(engine: Engine) -> str:
    """`logging_name` if set, else `<driver>://<host>:<port>/<database>`: never credentials."""
    if engine.logging_name:
        return str(engine.logging_name)
    url = engine.url
    host = (url.host or "") + (f":{url.port}" if url.port else "")
    return f"{url.drivername}://{host}/{_namespace(engine) or ''}"


def _target(engine: Engine, summaries: QuerySummaries | None) -> Target:
    """Where `engine`'s statements go: server.* from its URL as configured (none for SQLite, nor
    for a PostgreSQL socket given in the query string)."""
    dialect = engine.dialect
    system = "mariadb" if getattr(dialect, "is_mariadb", False) else None
    system = system or _SYSTEMS.get(dialect.name, dialect.name)
    url = engine.url
    host = None if dialect.name == "sqlite" or not url.host else server_address(url.host)
    port = url.port if host is not None else None
    return Target(system, _namespace(engine), host, port, summaries)


class _PoolState:
    __slots__ = ("__weakref__", "engine", "key", "max", "name", "open", "owner", "pending", "used")

    def __init__(self, owner: _Instrumentation, engine: Engine, pool: Pool) -> None:
        self.owner = owner
        self.engine = weakref.ref(engine)
        self.name = _pool_name(engine)
        self.key = pool_key(self.name)  # made once: every checkout records by it
        self.max = _pool_max(pool)
        # Lock-free: every checkout and checkin changes them.
        self.open, self.used, self.pending = Tally(), Tally(), Tally()


def _pool_max(pool: Pool) -> int | None:
    if isinstance(pool, QueuePool):
        overflow: int = getattr(pool, "_max_overflow", -1)
        return pool.size() + overflow if overflow >= 0 else None
    return 1 if isinstance(pool, (StaticPool, AssertionPool)) else None


# record_info keys: the _PoolState that counted the entry as open / as used.
_OPEN = "otel_kit.open"
_USED = "otel_kit.used"
_START = "_otel_kit_start"
# On a measured pool: its _PoolState (a fast lookup for every checkout).
_POOL_STATE = "_otel_kit_pool_state"
# On a wrapped dialect instance: (the _Instrumentation, its engine's Target, the keys of a
# COMMIT and a ROLLBACK that succeeded).
_WRAPPED = "_otel_kit_wrapped"
# The dialect's DB-API calls, with the position of `context` among their arguments after the
# statement: do_execute(cursor, statement, parameters, context=None), ...
_DBAPI_CALLS = (("do_execute", 1), ("do_executemany", 1), ("do_execute_no_params", 0))
# The private Connection method running all the batches of one insertmanyvalues execute()
# (SQLAlchemy 2.0 and 2.1). Without it each batch would count as one operation.
_INSERTMANY = "_exec_insertmany_context"
# The private Connection methods ending a transaction (SQLAlchemy 2.0 and 2.1), and the
# operation each is recorded as.
_TRANSACTION_ENDS = (("_commit_impl", "COMMIT"), ("_rollback_impl", "ROLLBACK"))


class _Instrumentation:
    def __init__(self, integration: IntegrationContext) -> None:
        self.duration: FastHistogram = integration.histogram(catalogue.DB_CLIENT_OPERATION_DURATION)
        self.wait_time: FastHistogram = integration.histogram(
            catalogue.DB_CLIENT_CONNECTION_WAIT_TIME
        )
        self.timeouts: FastSum = integration.sum(catalogue.DB_CLIENT_CONNECTION_TIMEOUTS)
        settings = integration.settings
        self.summaries = (
            QuerySummaries(settings.cardinality_limit) if settings.db_query_summary else None
        )
        self.pools: weakref.WeakKeyDictionary[Pool, _PoolState] = weakref.WeakKeyDictionary()
        self.dialects: weakref.WeakSet[Any] = weakref.WeakSet()
        self.lock = threading.Lock()
        # (name, our wrapper, the original) of the Connection methods wrapped, once installed
        self._connection_patches: list[tuple[str, Callable[..., Any], Callable[..., Any]]] = []
        self.enabled = True
        gauges = pool_gauges(integration)  # shared with the asyncpg and psycopg pools
        for spec, callback in (
            (catalogue.DB_CLIENT_CONNECTION_COUNT, self._observe_count),
            (catalogue.DB_CLIENT_CONNECTION_MAX, self._observe_max),
            (catalogue.DB_CLIENT_CONNECTION_PENDING_REQUESTS, self._observe_pending),
        ):
            gauges.add(spec, callback)

    def failed(self) -> None:
        report_failure("SQLAlchemy")

    # Statements.

    def wrap_dialect(self, engine: Engine) -> None:
        """Time the DB-API calls of `engine`'s dialect (instance attributes: subclasses that
        override them are wrapped too, and only this engine's dialect is touched)."""
        dialect = engine.dialect
        wrapped = dialect.__dict__.get(_WRAPPED)
        if wrapped is not None and wrapped[0] is self:
            return
        target = _target(engine, self.summaries)
        for name, context_at in _DBAPI_CALLS:
            original = getattr(type(dialect), name)
            setattr(dialect, name, self._timed(original, dialect, target, context_at))
        ends = {operation: target.key(operation) for _, operation in _TRANSACTION_ENDS}
        dialect.__dict__[_WRAPPED] = (self, target, ends)
        self.dialects.add(dialect)
        if not self._connection_patches:
            self._patch_connection()

    def _patch_connection(self) -> None:
        """Wrap the Connection methods (class-wide: they look up the dialect's labels)."""
        wrappers: list[tuple[str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = [
            (_INSERTMANY, self.wrap_insertmany)
        ]
        for name, operation in _TRANSACTION_ENDS:
            wrappers.append((name, functools.partial(self.wrap_transaction_end, operation)))
        for name, wrap in wrappers:
            original = getattr(Connection, name, None)
            if original is not None:
                wrapper = wrap(original)
                self._connection_patches.append((name, wrapper, original))
                setattr(Connection, name, wrapper)

    def unwrap_dialects(self, dialects: Iterable[Any]) -> None:
        for dialect in list(dialects):
            wrapped = dialect.__dict__.get(_WRAPPED)
            if wrapped is not None and wrapped[0] is self:
                for name, _ in _DBAPI_CALLS:
                    dialect.__dict__.pop(name, None)
                del dialect.__dict__[_WRAPPED]
            self.dialects.discard(dialect)
        if not self.dialects:
            for name, wrapper, original in self._connection_patches:
                if Connection.__dict__.get(name) is wrapper:
                    setattr(Connection, name, original)
            self._connection_patches = []

    def _timed(
        self,
        original: Callable[..., Any],
        dialect: Any,
        target: Target,
        context_at: int,
    ) -> Callable[..., Any]:
        record = self.duration.record
        key = target.statement_key

        @functools.wraps(original)
        def call(cursor: Any, statement: str, *args: Any, **kwargs: Any) -> Any:
            context = args[context_at] if len(args) > context_at else kwargs.get("context")
            if (context is not None and _START in context.__dict__) or suspended():
                return original(dialect, cursor, statement, *args, **kwargs)  # a batch, or not
            start = perf_counter()
            try:
                result = original(dialect, cursor, statement, *args, **kwargs)
            except BaseException as error:  # the driver's own exception
                if context is not None:  # a statement SQLAlchemy ran
                    context.__dict__[_START] = start
                    self._finish(context, error)
                raise
            try:
                elapsed = perf_counter() - start
                record(elapsed, key(statement))
            except Exception:
                self.failed()
            return result

        return call

    def wrap_insertmany(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """One observation for all the cursor batches of an insertmanyvalues `execute()`."""

        @functools.wraps(original)
        def _exec_insertmany_context(connection: Any, dialect: Any, context: Any) -> Any:
            wrapped = dialect.__dict__.get(_WRAPPED)
            if wrapped is None or wrapped[0] is not self or suspended():
                return original(connection, dialect, context)
            context.__dict__[_START] = perf_counter()
            try:
                result = original(connection, dialect, context)
            except BaseException as error:  # SQLAlchemy's: the driver's is its `.orig`
                self._finish(context, error)
                raise
            self._finish(context)
            return result

        return _exec_insertmany_context

    def wrap_transaction_end(
        self, operation: str, original: Callable[[Connection], None]
    ) -> Callable[[Connection], None]:
        """Time `Connection._commit_impl` or `_rollback_impl` as `operation`."""

        record = self.duration.record
        committing = operation == "COMMIT"

        # One function, no helper calls: every connect()...close() ends with a ROLLBACK here.
        @functools.wraps(original)
        def end(connection: Connection) -> None:
            wrapped = connection.dialect.__dict__.get(_WRAPPED)
            if wrapped is None or wrapped[0] is not self or suspended():
                return original(connection)
            try:
                # The driver is asked to end a transaction: not in AUTOCOMMIT, not on an
                # invalidated connection (SQLAlchemy skips the driver's rollback then).
                ends = not connection._is_autocommit_isolation() and (
                    committing or connection._still_open_and_dbapi_connection_is_valid
                )
            except Exception:
                self.failed()
                ends = False
            if not ends:
                return original(connection)
            start = perf_counter()
            try:
                original(connection)
            except BaseException as error:
                try:
                    record(perf_counter() - start, wrapped[1].key(operation, *failure(error)))
                except Exception:
                    self.failed()
                raise
            try:
                record(perf_counter() - start, wrapped[2][operation])
            except Exception:
                self.failed()

        return end

    def _finish(self, context: ExecutionContext, error: BaseException | None = None) -> None:
        """Record the statement `context` started timing (`_START`), failed with `error`.
        Never raises: that would replace the application's exception."""
        end = perf_counter()
        try:
            start = context.__dict__.pop(_START, None)
            if start is None:
                return  # not sent to the database, or recorded already
            wrapped = context.dialect.__dict__.get(_WRAPPED)
            if wrapped is None or wrapped[0] is not self:
                return  # an engine this instrumentation does not measure
            target: Target = wrapped[1]
            statement = context.statement or ""
            key = target.statement_key(statement, *(failure(error) if error is not None else ()))
            self.duration.record(end - start, key)
        except Exception:
            self.failed()

    # Pools.

    def wrap_raw_connection(
        self, original: Callable[[Engine], PoolProxiedConnection]
    ) -> Callable[[Engine], PoolProxiedConnection]:
        @functools.wraps(original)
        def raw_connection(engine: Engine) -> PoolProxiedConnection:
            if not self.enabled:
                return original(engine)
            try:
                pool = engine.pool
                found = pool.__dict__.get(_POOL_STATE)
                state = (
                    found
                    if found is not None and found.owner is self
                    else self._track(engine, pool)
                )
                state.pending.up()
            except Exception:
                self.failed()
                return original(engine)
            start = perf_counter()
            try:
                connection = original(engine)
            except BaseException as error:
                state.pending.down()
                if isinstance(error, exc.TimeoutError) and not suspended():
                    try:
                        self.timeouts.add(1, state.key)
                    except Exception:
                        self.failed()
                raise
            try:
                if not suspended():
                    self.wait_time.record(perf_counter() - start, state.key)
                info = connection.record_info
                if info is not None and info.get(_OPEN) is not state:
                    claim(connection.driver_connection, self)  # made before setup: see on_connect
            except Exception:
                self.failed()
                info = None
            state.pending.down()
            if info is not None:  # the entry is this caller's alone until it is returned
                if info.get(_OPEN) is not state:
                    info[_OPEN] = state
                    state.open.up()
                if info.get(_USED) is not state:
                    info[_USED] = state
                    state.used.up()
            return connection

        return raw_connection

    def _track(self, engine: Engine, pool: Pool) -> _PoolState:
        """The first connection from `pool`: count its connections, time its engine's SQL."""
        with self.lock:
            state = self.pools.get(pool)
            if state is None:
                self.wrap_dialect(engine)
                state = self.pools[pool] = _PoolState(self, engine, pool)
                setattr(pool, _POOL_STATE, state)
                self.timeouts.add(0, state.key)  # the series, before the first timeout
        return state

    def _release(self, record: Any, keys: Iterable[tuple[str, str]]) -> None:
        try:
            info = record.record_info
            for key, field in keys:
                state = info.pop(key, None)
                if state is not None:
                    getattr(state, field).down()
        except Exception:
            self.failed()

    def on_connect(self, dbapi_connection: Any, record: Any) -> None:
        """A new connection's statements are SQLAlchemy's: the asyncpg and psycopg integrations
        skip them (the dialect's own first queries included), so each counts once, here."""
        try:
            claim(record.driver_connection, self)
        except Exception:
            self.failed()

    def on_close(self, dbapi_connection: Any, record: Any) -> None:
        self._release(record, ((_OPEN, "open"),))

    def on_detach(self, dbapi_connection: Any, record: Any) -> None:
        self._release(record, ((_OPEN, "open"), (_USED, "used")))

    def _current(self) -> dict[str, list[int]]:
        """Pool name -> [idle, used, max (-1: unbounded), pending], summed over live pools."""
        totals: dict[str, list[int]] = {}
        if not self.enabled:
            return totals
        for pool, state in list(self.pools.items()):
            engine = state.engine()
            if engine is not None and engine.pool is not pool:
                continue  # disposed: the engine has a new pool
            total = totals.setdefault(state.name, [0, 0, 0, 0])
            used = max(state.used.value(), 0)
            total[0] += max(state.open.value() - used, 0)
            total[1] += used
            total[2] = -1 if state.max is None or total[2] < 0 else total[2] + state.max
            total[3] += max(state.pending.value(), 0)
        return totals

    def _observe_count(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for name, (idle, used, _max, _pending) in self._current().items():
            for kind, count in (("idle", idle), ("used", used)):
                observations.append(Observation(count, pool_attributes(name, kind)))
        return observations

    def _observe_max(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(total[2], pool_attributes(name))
            for name, total in self._current().items()
            if total[2] >= 0
        ]

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(total[3], pool_attributes(name)) for name, total in self._current().items()
        ]


def _listeners(
    instrumentation: _Instrumentation, pools: Any
) -> list[tuple[Any, str, Callable[..., Any]]]:
    return [
        (pools, "connect", instrumentation.on_connect),
        (pools, "close", instrumentation.on_close),
        (pools, "detach", instrumentation.on_detach),
    ]


def _wrap_checkin(original: Callable[..., None]) -> Callable[..., None]:
    """Clear a returned connection's used mark (the `checkin` event's work, undispatched)."""

    @functools.wraps(original)
    def checkin(record: Any, _fairy_was_created: bool = True) -> None:
        try:
            state = record.record_info.pop(_USED, None)  # None again on a double checkin
            if state is not None:
                state.used.down()
        except Exception:
            report_failure("SQLAlchemy")
        original(record, _fairy_was_created)

    return checkin


class _CheckinHook:
    """`_ConnectionRecord.checkin` wrapped while any instrumentation counts pools (one wrapper
    for all: the mark names its _PoolState)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.patches = Patches()

    def acquire(self) -> Callable[[], None]:
        """Wrap it if not yet; returns the function that releases this use (once)."""
        with self.lock:
            if self.users == 0:
                self.patches = Patches()
                self.patches.apply([(_ConnectionRecord, "checkin", _wrap_checkin)])
            self.users += 1
        released = False

        def release() -> None:
            nonlocal released
            with self.lock:
                if released:
                    return
                released = True
                self.users -= 1
                if self.users == 0:
                    self.patches.undo()

        return release


_checkins = _CheckinHook()


def _remove(listeners: list[tuple[Any, str, Callable[..., Any]]]) -> None:
    for target, name, listener in listeners:
        if event.contains(target, name, listener):
            event.remove(target, name, listener)


# Per setup (keyed by its FastInstruments): the automatic instrumentation, or the one that
# explicitly instrumented engines share (observable pool gauges can be registered once per
# provider).
_automatic: weakref.WeakKeyDictionary[Any, _Instrumentation] = weakref.WeakKeyDictionary()
_explicit: weakref.WeakKeyDictionary[Any, _Instrumentation] = weakref.WeakKeyDictionary()


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Measure every SQLAlchemy engine and pool; returns the function that stops it."""
    instrumentation = _automatic[integration.fast] = _Instrumentation(integration)
    listeners = _listeners(instrumentation, Pool)
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    patches = Patches()
    patches.apply([(Engine, "raw_connection", instrumentation.wrap_raw_connection)])
    release_checkins = _checkins.acquire()

    def undo() -> None:
        instrumentation.enabled = False  # the wrapper stays inert if someone wrapped it since
        _automatic.pop(integration.fast, None)
        patches.undo()
        release_checkins()
        _remove(listeners)
        instrumentation.unwrap_dialects(instrumentation.dialects)
        instrumentation.pools.clear()
        release_claims(instrumentation)

    return undo


def instrument_engine(integration: IntegrationContext, engine: Any) -> Callable[[], None] | None:
    """Measure one engine (sync or async) when the automatic instrumentation is off.

    With it on, every engine is measured already: returns None and changes nothing. Otherwise
    returns the function that stops measuring this engine.
    """
    if integration.fast in _automatic:
        return None
    engine = getattr(engine, "sync_engine", engine)  # AsyncEngine
    instrumentation = _explicit.get(integration.fast)
    if instrumentation is None:
        instrumentation = _explicit[integration.fast] = _Instrumentation(integration)
    # Pool events listened for on an engine follow it to the new pool after dispose().
    listeners = _listeners(instrumentation, engine)
    for target, name, listener in listeners:
        # "connect" before the engine's own listeners: the dialect's first queries are counted
        # once (class-level listeners, the automatic instrumentation's, run first anyway).
        event.listen(target, name, listener, insert=name == "connect")
    wrapper = instrumentation.wrap_raw_connection(type(engine).raw_connection)
    engine.raw_connection = functools.partial(wrapper, engine)
    release_checkins = _checkins.acquire()

    def undo() -> None:
        if engine.__dict__.get("raw_connection") is not None:
            del engine.raw_connection
        release_checkins()
        _remove(listeners)
        instrumentation.unwrap_dialects([engine.dialect])

    return undo
