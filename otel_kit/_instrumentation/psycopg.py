"""psycopg 3 metrics without SQLAlchemy: the duration of every statement of sync and async
connections (`psycopg_pool`'s pools: the psycopg_pool integration).

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
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from contextvars import ContextVar
from time import perf_counter
from typing import Any

import psycopg
from psycopg import sql

from otel_kit import catalogue
from otel_kit._instrumentation._context import IntegrationContext, server_address
from otel_kit._instrumentation._db import Target, failure, query_summaries
from otel_kit._instrumentation._sql import claimed, suspended
from otel_kit._support import Patches, report_failure, timed

__all__ = ["instrument"]

_SYSTEM = "postgresql"
_TARGET = "_otel_kit_target"  # on a connection: (the _Instrumentation, its Target), built once
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


class _Instrumentation:
    def __init__(self, integration: IntegrationContext, patches: Patches) -> None:
        self.patches = patches
        self.summaries = query_summaries(integration)
        self.duration = integration.histogram(catalogue.DB_CLIENT_OPERATION_DURATION)

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


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Measure every psycopg connection, sync and async; returns the function that stops it."""
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
    patches.apply(targets)
    return patches.undo
