"""SQLAlchemy metrics: the duration of every statement and the state of every connection pool.

Why not contrib's SQLAlchemyInstrumentor: it emits only the deprecated
`db.client.connections.usage`, no operation duration, and refuses SQLAlchemy 2.1.

Statements: listeners on the `Engine` class reach every engine (sync engines and the
`sync_engine` of async ones), created before or after setup. A statement is timed from its first
cursor execution to `after_execute` (or `handle_error`), with the start kept on its execution
context, so an `execute()` with many parameter sets counts once even when SQLAlchemy sends it in
several "insertmanyvalues" batches.

Pools: every engine gets its connections through `Engine.raw_connection()`, whatever the pool
class. Wrapping that one public method gives the wait time, the pending requests, the checkout
timeouts (`QueuePool` raises `sqlalchemy.exc.TimeoutError`; no pool event reports it) and the
engine's URL for `pool.name`. A connection checked out there is marked in its pool entry's
`record_info`; `checkin`/`close`/`detach` events on the `Pool` class clear the marks, which keeps
the used/idle counts right for every pool class without reading pool internals. Pools are held
weakly; a pool its engine replaced (`engine.dispose()`) leaves the gauges at once.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from sqlalchemy import event, exc
from sqlalchemy.engine import CursorResult, Engine, ExceptionContext, ExecutionContext
from sqlalchemy.pool import AssertionPool, Pool, PoolProxiedConnection, QueuePool, StaticPool

from otel_kit import catalogue
from otel_kit._fast import FastHistogram, FastSum
from otel_kit.instrumentation import Context, error_type, report_failure

__all__ = ["OPERATIONS", "instrument", "instrument_engine", "operation_name"]

_log = logging.getLogger("otel_kit")

# The verbs `db.operation.name` may take; anything else is recorded as "OTHER".
OPERATIONS = frozenset(
    """SELECT INSERT UPDATE DELETE MERGE UPSERT REPLACE VALUES CREATE ALTER DROP TRUNCATE RENAME
    COMMENT BEGIN START COMMIT ROLLBACK SAVEPOINT RELEASE PREPARE DEALLOCATE SET SHOW RESET
    EXPLAIN ANALYZE VACUUM REINDEX CLUSTER CHECKPOINT CALL EXEC EXECUTE DO GRANT REVOKE LOCK COPY
    PRAGMA ATTACH DETACH DECLARE FETCH CLOSE LISTEN NOTIFY USE DESCRIBE REFRESH DISCARD""".split()  # noqa: SIM905
)
OTHER = "OTHER"
_CTE_BODIES = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES"})
_FIRST_WORD = re.compile(r"\s*([A-Za-z]+)\b")
_TOKEN = re.compile(
    r"""(?P<skip> \s+ | --[^\n]* | /\*.*?(?:\*/|\Z) )
    | '(?:[^']|'')*'? | "(?:[^"]|"")*"? | `[^`]*`? | \[[^\]]*\]?
    | \$(?P<tag>(?:[^\W\d]\w*)?)\$.*?(?:\$(?P=tag)\$|\Z)
    | (?P<word>[^\W\d]\w*) | (?P<open>\() | (?P<close>\)) | .""",
    re.DOTALL | re.VERBOSE,
)


def operation_name(statement: str) -> str:
    """The statement's verb (the main statement's for `WITH ...`), from OPERATIONS, else OTHER."""
    # Only short statements are cached: literal-laden SQL can be unbounded in number and size.
    return _cached_name(statement) if len(statement) <= 4096 else _name(statement)


def _name(statement: str) -> str:
    match = _FIRST_WORD.match(statement)
    if match is not None:  # fast path: no comment or parenthesis before the verb
        verb = match.group(1).upper()
        if verb != "WITH":
            return verb if verb in OPERATIONS else OTHER
    return _scan(statement)


def _scan(statement: str) -> str:
    depth = 0
    with_depth: int | None = None  # the depth of the WITH, once seen
    for token in _TOKEN.finditer(statement):
        kind = token.lastgroup
        if kind == "open":
            depth += 1
        elif kind == "close":
            depth -= 1
        elif kind == "word":
            verb = token.group().upper()
            if with_depth is None:
                if verb != "WITH":
                    return verb if verb in OPERATIONS else OTHER
                with_depth = depth
            elif depth <= with_depth and verb in _CTE_BODIES:
                return verb
        elif kind != "skip" and with_depth is None:
            return OTHER  # a literal or a symbol where the verb should be
    return OTHER


_cached_name = functools.lru_cache(maxsize=512)(_name)

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


def _error_type(error: BaseException | None, original: BaseException) -> str:
    """SQLAlchemy's DB-API class name (`IntegrityError`, ...: the same for every driver), else
    the class name of what was raised."""
    if isinstance(error, exc.DBAPIError):
        return type(error).__name__
    return error_type(original)


class _PoolState:
    __slots__ = ("__weakref__", "engine", "lock", "max", "name", "open", "pending", "used")

    def __init__(self, engine: Engine, pool: Pool) -> None:
        self.engine = weakref.ref(engine)
        self.name = _pool_name(engine)
        self.max = _pool_max(pool)
        self.lock = threading.Lock()
        self.open = self.used = self.pending = 0

    def add(self, field: str, amount: int) -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + amount)


def _pool_max(pool: Pool) -> int | None:
    if isinstance(pool, QueuePool):
        overflow: int = getattr(pool, "_max_overflow", -1)
        return pool.size() + overflow if overflow >= 0 else None
    return 1 if isinstance(pool, (StaticPool, AssertionPool)) else None


# record_info keys: the _PoolState that counted the entry as open / as used.
_OPEN = "otel_kit.open"
_USED = "otel_kit.used"
_START = "_otel_kit_start"


class _Instrumentation:
    def __init__(self, context: Context) -> None:
        self.duration: FastHistogram = context.histogram(catalogue.DB_CLIENT_OPERATION_DURATION)
        self.wait_time: FastHistogram = context.histogram(catalogue.DB_CLIENT_CONNECTION_WAIT_TIME)
        self.timeouts: FastSum = context.sum(catalogue.DB_CLIENT_CONNECTION_TIMEOUTS)
        self.pools: weakref.WeakKeyDictionary[Pool, _PoolState] = weakref.WeakKeyDictionary()
        self.labels: weakref.WeakKeyDictionary[Engine, tuple[str, str | None]] = (
            weakref.WeakKeyDictionary()
        )
        self.enabled = True
        meter = context.meter_provider.get_meter("otel_kit")
        for spec, callback in (
            (catalogue.DB_CLIENT_CONNECTION_COUNT, self._observe_count),
            (catalogue.DB_CLIENT_CONNECTION_MAX, self._observe_max),
            (catalogue.DB_CLIENT_CONNECTION_PENDING_REQUESTS, self._observe_pending),
        ):
            meter.create_observable_up_down_counter(
                spec.name, [callback], unit=spec.unit, description=spec.description
            )

    def failed(self) -> None:
        report_failure("SQLAlchemy")

    # Statements.

    def before_cursor_execute(
        self, conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, many: Any
    ) -> None:
        # Only the first cursor execution of a context starts the clock (insertmanyvalues).
        try:
            if context is not None:
                context.__dict__.setdefault(_START, perf_counter())
        except Exception:
            self.failed()

    def after_execute(
        self, conn: Any, clause: Any, multi: Any, params: Any, options: Any, result: Any
    ) -> None:
        if isinstance(result, CursorResult):
            self._finish(result.context, None)

    def handle_error(self, error: ExceptionContext) -> None:
        # Must return None and never raise: either would replace the application's exception.
        try:
            if error.execution_context is not None:
                kind = _error_type(error.sqlalchemy_exception, error.original_exception)
                self._finish(error.execution_context, kind)
        except Exception:
            self.failed()

    def _finish(self, context: ExecutionContext, error_type: str | None) -> None:
        end = perf_counter()
        try:
            start = context.__dict__.pop(_START, None)
            if start is None:
                return  # not sent to the database, or recorded already
            engine = context.root_connection.engine
            labels = self.labels.get(engine)
            if labels is None:
                system = "mariadb" if getattr(engine.dialect, "is_mariadb", False) else None
                system = system or _SYSTEMS.get(engine.dialect.name, engine.dialect.name)
                labels = self.labels[engine] = (system, _namespace(engine))
            operation = operation_name(context.statement or "")
            self.duration.record(end - start, (labels[0], operation, labels[1], error_type))
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
                state = self.pools.get(pool) or self.pools.setdefault(
                    pool, _PoolState(engine, pool)
                )
                state.add("pending", 1)
            except Exception:
                self.failed()
                return original(engine)
            start = perf_counter()
            try:
                connection = original(engine)
            except exc.TimeoutError:
                try:
                    self.timeouts.add(1, (state.name,))
                except Exception:
                    self.failed()
                raise
            finally:
                state.add("pending", -1)
            try:
                self.wait_time.record(perf_counter() - start, (state.name,))
                info = connection.record_info
                if info is not None:
                    for key, field in ((_OPEN, "open"), (_USED, "used")):
                        if info.get(key) is not state:
                            info[key] = state
                            state.add(field, 1)
            except Exception:
                self.failed()
            return connection

        return raw_connection

    def _release(self, record: Any, keys: Iterable[tuple[str, str]]) -> None:
        try:
            info = record.record_info
            for key, field in keys:
                state = info.pop(key, None)
                if state is not None:
                    state.add(field, -1)
        except Exception:
            self.failed()

    def on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            self._release(record, ((_USED, "used"),))

    def on_close(self, dbapi_connection: Any, record: Any) -> None:
        self._release(record, ((_OPEN, "open"),))

    def on_detach(self, dbapi_connection: Any, record: Any) -> None:
        self._release(record, ((_OPEN, "open"), (_USED, "used")))

    def _current(self) -> dict[str, list[int]]:
        """pool.name -> [idle, used, max (-1: unbounded), pending], summed over live pools."""
        totals: dict[str, list[int]] = {}
        if not self.enabled:
            return totals
        for pool, state in list(self.pools.items()):
            engine = state.engine()
            if engine is not None and engine.pool is not pool:
                continue  # disposed: the engine has a new pool
            total = totals.setdefault(state.name, [0, 0, 0, 0])
            used = max(state.used, 0)
            total[0] += max(state.open - used, 0)
            total[1] += used
            total[2] = -1 if state.max is None or total[2] < 0 else total[2] + state.max
            total[3] += max(state.pending, 0)
        return totals

    def _observe_count(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for name, (idle, used, _max, _pending) in self._current().items():
            for kind, count in (("idle", idle), ("used", used)):
                attributes = {"pool.name": name, "db.client.connection.state": kind}
                observations.append(Observation(count, attributes))
        return observations

    def _observe_max(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(total[2], {"pool.name": name})
            for name, total in self._current().items()
            if total[2] >= 0
        ]

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(total[3], {"pool.name": name}) for name, total in self._current().items()
        ]


def _listeners(
    instrumentation: _Instrumentation, engines: Any, pools: Any
) -> list[tuple[Any, str, Callable[..., Any]]]:
    return [
        (engines, "before_cursor_execute", instrumentation.before_cursor_execute),
        (engines, "after_execute", instrumentation.after_execute),
        (engines, "handle_error", instrumentation.handle_error),
        (pools, "checkin", instrumentation.on_checkin),
        (pools, "close", instrumentation.on_close),
        (pools, "detach", instrumentation.on_detach),
    ]


def _remove(listeners: list[tuple[Any, str, Callable[..., Any]]]) -> None:
    for target, name, listener in listeners:
        if event.contains(target, name, listener):
            event.remove(target, name, listener)


# Per setup (keyed by its FastMetrics): the automatic instrumentation, or the one that explicitly
# instrumented engines share (observable pool gauges can be registered once per provider).
_automatic: weakref.WeakKeyDictionary[Any, _Instrumentation] = weakref.WeakKeyDictionary()
_explicit: weakref.WeakKeyDictionary[Any, _Instrumentation] = weakref.WeakKeyDictionary()


def instrument(context: Context) -> Callable[[], None]:
    """Measure every SQLAlchemy engine and pool; returns the function that stops it."""
    instrumentation = _automatic[context.fast] = _Instrumentation(context)
    listeners = _listeners(instrumentation, Engine, Pool)
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    original = Engine.raw_connection
    wrapper = instrumentation.wrap_raw_connection(original)
    Engine.raw_connection = wrapper  # type: ignore[method-assign,assignment]

    def undo() -> None:
        instrumentation.enabled = False  # the wrapper stays inert if someone wrapped it since
        _automatic.pop(context.fast, None)
        if Engine.__dict__.get("raw_connection") is wrapper:
            Engine.raw_connection = original  # type: ignore[method-assign]
        _remove(listeners)
        instrumentation.pools.clear()

    return undo


def instrument_engine(context: Context, engine: Any) -> Callable[[], None] | None:
    """Measure one engine (sync or async) when the automatic instrumentation is off.

    With it on, every engine is measured already: returns None and changes nothing. Otherwise
    returns the function that stops measuring this engine.
    """
    if context.fast in _automatic:
        return None
    engine = getattr(engine, "sync_engine", engine)  # AsyncEngine
    instrumentation = _explicit.get(context.fast)
    if instrumentation is None:
        instrumentation = _explicit[context.fast] = _Instrumentation(context)
    # Pool events listened for on an engine follow it to the new pool after dispose().
    listeners = _listeners(instrumentation, engine, engine)
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    wrapper = instrumentation.wrap_raw_connection(type(engine).raw_connection)
    engine.raw_connection = functools.partial(wrapper, engine)

    def undo() -> None:
        if engine.__dict__.get("raw_connection") is not None:
            del engine.raw_connection
        _remove(listeners)

    return undo
