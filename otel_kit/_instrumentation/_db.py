"""The rule every database integration records by, so one statement or command gets the same
series whichever driver sent it:

- `Target(...).key(operation, ...)`, `.statement_key(sql, ...)`: the fast-instrument key of
  `db.client.operation.duration`, in the catalogue's attribute order (tests/unit/test_db_keys.py
  checks it); with `QuerySummaries` (the setting `db_query_summary`), also `db.query.summary`,
  bounded;
- `pool_key(name)` / `pool_state_key(name, state)` / `pool_attributes(name, ...)`: the keys and
  attributes of the five `db.client.connection.*` pool metrics (in the catalogue's order too);
- `failure(exc)`: `error.type` and `db.response.status_code` of a failed operation, from the
  driver's exception (SQLAlchemy's wrapper is looked through): the SQLSTATE of a SQL error
  (psycopg 3 and asyncpg `sqlstate`, psycopg2 `pgcode`), a Redis error reply's code
  (`WRONGTYPE`, `NOSCRIPT`, `ERR`, ...) with `redis_failure(exc)`.

Both codes come from a fixed shape (five characters; one upper-case word), so no message text
reaches a label.
"""

from __future__ import annotations

import re
from typing import Any

from otel_kit._instrumentation._context import IntegrationContext, error_type
from otel_kit._instrumentation._sql import operation_name, query_summary

__all__ = [
    "POOL_NAME",
    "QuerySummaries",
    "Target",
    "driver_error",
    "failure",
    "pool_attributes",
    "pool_key",
    "pool_state_key",
    "query_summaries",
    "redis_failure",
    "redis_status_code",
    "sql_status_code",
]

Key = tuple[Any, ...]

POOL_NAME = "db.client.connection.pool.name"
_POOL_STATE = "db.client.connection.state"


class QuerySummaries:
    """`db.query.summary` for one setup, when the setting `db_query_summary` is on: at most
    half the cardinality limit distinct summaries; a statement with another one then gets its
    operation name as summary, so generated table names cannot push the other series (the
    other half: operation names, errors) into the overflow series."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, cardinality_limit: int) -> None:
        self._limit = max(cardinality_limit // 2, 1)
        self._seen: set[str] = set()

    def __call__(self, statement: str, operation: str) -> str:
        summary = query_summary(statement)
        if summary not in self._seen:
            if len(self._seen) >= self._limit:
                return operation
            self._seen.add(summary)  # racing threads may admit one or two more: still bounded
        return summary


def query_summaries(integration: IntegrationContext) -> QuerySummaries | None:
    """The setup's `QuerySummaries` when `db_query_summary` is on, else None (no summaries)."""
    settings = integration.settings
    return QuerySummaries(settings.cardinality_limit) if settings.db_query_summary else None


class Target:
    """Where operations go: the attributes fixed per engine, pool or client, given once.

    `server.address`/`server.port` as configured (the engine URL, the client's pool); None where
    there is no server (SQLite) or it is found per connection. `summaries`: SQL statements get
    `db.query.summary` (None: the setting is off, or not SQL).
    """

    __slots__ = ("address", "namespace", "port", "summaries", "system")

    def __init__(
        self,
        system: str,
        namespace: str | None,
        address: str | None = None,
        port: int | None = None,
        summaries: QuerySummaries | None = None,
    ) -> None:
        self.system = system
        self.namespace = namespace
        self.address = address
        self.port = port
        self.summaries = summaries

    def key(self, operation: str, error: str | None = None, status: str | None = None) -> Key:
        """The key of one `db.client.operation.duration` observation of `operation` (COMMIT,
        a Redis command: its summary, if any, is the operation name)."""
        summary = None if self.summaries is None else operation
        return (
            self.system, operation, self.namespace, error, self.address, self.port, status, summary
        )  # fmt: skip

    def statement_key(
        self, statement: str, error: str | None = None, status: str | None = None
    ) -> Key:
        """The key of one observation of the SQL `statement`."""
        operation = operation_name(statement)
        summaries = self.summaries
        summary = None if summaries is None else summaries(statement, operation)
        return (
            self.system, operation, self.namespace, error, self.address, self.port, status, summary
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"Target({self.system!r}, {self.namespace!r}, {self.address!r}, {self.port!r})"


def pool_key(name: str) -> Key:
    """The key of `db.client.connection.wait_time` and `.timeouts` for pool `name`."""
    return (name,)


def pool_state_key(name: str, state: str) -> Key:
    """The key of `db.client.connection.count` (`state`: idle or used)."""
    return (name, state)


def pool_attributes(name: str, state: str | None = None) -> dict[str, str]:
    """The attributes of an observation of a pool gauge (`state` only for the count)."""
    if state is None:
        return {POOL_NAME: name}
    return {POOL_NAME: name, _POOL_STATE: state}


def driver_error(exc: BaseException) -> BaseException:
    """The driver's exception: SQLAlchemy's `DBAPIError` carries it as `.orig`; an asyncio
    dialect's adaptation of it (`AsyncAdapt_asyncpg_dbapi.IntegrityError`) as `.orig` from
    SQLAlchemy 2.1, before as its `__cause__`."""
    for _ in range(3):  # wrapper, adaptation, driver
        original = getattr(exc, "orig", None)
        if not isinstance(original, BaseException):
            if not type(exc).__module__.startswith("sqlalchemy."):
                break
            original = exc.__cause__
            if original is None:
                break
        exc = original
    return exc


_SQLSTATE = re.compile(r"[0-9A-Z]{5}")


def sql_status_code(exc: BaseException) -> str | None:
    """The SQLSTATE of a SQL error (`23505`, `42601`), else None."""
    code = getattr(exc, "sqlstate", None)  # psycopg 3, asyncpg
    if code is None:
        code = getattr(exc, "pgcode", None)  # psycopg2
    return code if isinstance(code, str) and _SQLSTATE.fullmatch(code) else None


def failure(exc: BaseException) -> tuple[str, str | None]:
    """`error.type` and `db.response.status_code` of a failed SQL operation."""
    driver = driver_error(exc)
    return error_type(driver), sql_status_code(driver)


# An error reply's code: the first word, in the shape Redis and its modules give them (ERR,
# WRONGTYPE, NOGROUP, SEARCH_SYNTAX); a free-form message ("Syntax error at ...") has none.
_REDIS_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# redis-py before `status_code` (8.x) cuts the code of these replies off their message and
# raises these classes instead; ERR replies become a bare ResponseError.
_REDIS_CLASS_CODES = {
    "NoScriptError": "NOSCRIPT",
    "ReadOnlyError": "READONLY",
    "ExecAbortError": "EXECABORT",
    "BusyLoadingError": "LOADING",
    "OutOfMemoryError": "OOM",
    "NoPermissionError": "NOPERM",
    "AskError": "ASK",
    "TryAgainError": "TRYAGAIN",
    "MovedError": "MOVED",
    "ClusterDownError": "CLUSTERDOWN",
    "ClusterCrossSlotError": "CROSSSLOT",
    "MasterDownError": "MASTERDOWN",
    "ModuleError": "ERR",
}


def redis_status_code(exc: BaseException) -> str | None:
    """The code of the Redis error reply `exc` was raised for, else None (connection errors,
    timeouts, errors raised by the client itself)."""
    # redis-py 8.2+ parses it from the reply itself (8.0 and 8.1 have the attribute, unset)
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and _REDIS_CODE.fullmatch(code):
        return code
    names = [cls.__name__ for cls in type(exc).__mro__ if cls.__module__.startswith("redis.")]
    if "ResponseError" not in names:
        return None  # not an error reply
    for name in names:
        code = _REDIS_CLASS_CODES.get(name)
        if code is not None:
            return code
    # A pipeline's error: "Command # 2 (LPUSH k v) of pipeline caused error: WRONGTYPE ...",
    # the asyncio client's with the reply as a tuple's repr, "('WRONGTYPE ...',)".
    message = str(exc).rpartition(" of pipeline caused error: ")[2].lstrip("('\"")
    first = message.split(" ", 1)[0]
    # A reply whose code was not cut off keeps it; the one cut off into a bare ResponseError
    # is ERR (Redis starts every error reply with a code).
    return first if _REDIS_CODE.fullmatch(first) else "ERR"


def redis_failure(exc: BaseException) -> tuple[str, str | None]:
    """`error.type` and `db.response.status_code` of a failed Redis command."""
    return error_type(exc), redis_status_code(exc)
