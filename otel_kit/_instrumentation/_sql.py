"""What every database integration shares: `db.operation.name` from SQL text (the statement's
verb from a fixed list, else OTHER), `not_measured()`, and which layer measures a connection.

One rule for all of them, so a statement gets the same operation name whichever driver or ORM
sent it. Literals, identifiers and comments never reach a label. Standard library only:
`otel_kit.not_measured` is imported from here without loading the SDK.
"""

from __future__ import annotations

import contextlib
import functools
import re
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

__all__ = [
    "OPERATIONS",
    "OTHER",
    "claim",
    "claimed",
    "not_measured",
    "operation_name",
    "release_claims",
    "suspended",
]

# A context variable, not a global flag: a request served while another task or thread runs
# migrations inside `not_measured()` is still measured.
_NOT_MEASURED: ContextVar[bool] = ContextVar("otel_kit_not_measured", default=False)
# True inside `not_measured()`: the bound method itself, one C call on every statement.
suspended: Callable[[], bool] = _NOT_MEASURED.get


@contextlib.contextmanager
def not_measured() -> Iterator[None]:
    """Record no database client metrics for the work done inside: e.g. migrations or seeding
    at start-up, which would otherwise mix with the application's query latencies.

        with otel_kit.not_measured():
            alembic.command.upgrade(config, "head")

    Only the current thread or asyncio task (and the tasks it creates inside) is affected:
    concurrent requests in other threads and tasks are still measured. Inside, SQLAlchemy
    statements, COMMIT/ROLLBACK and connection waits and timeouts are not recorded; the pool's
    connection counts stay exact (a connection checked out inside is still in use). Nests;
    works before `setup_metrics()` too.
    """
    token = _NOT_MEASURED.set(True)
    try:
        yield
    finally:
        _NOT_MEASURED.reset(token)


# Driver connections (asyncpg, psycopg) an ORM integration measures (SQLAlchemy: every connection
# its pools hold), by id(): the driver integrations skip them, so a statement counts once, in the
# layer the application called. id() keys: `claimed()` is one dict lookup on every statement; the
# weak reference's callback drops the entry when the connection is collected, before its id can
# be reused. The value: (that reference, the claiming integration), for `release_claims`.
_CLAIMED: dict[int, tuple[weakref.ref[Any], object]] = {}


def claim(connection: Any, owner: object) -> None:
    """Mark a driver connection as measured by `owner` (not by the driver's integration)."""
    key = id(connection)
    if key not in _CLAIMED:
        try:
            ref = weakref.ref(connection, lambda _: _CLAIMED.pop(key, None))
        except TypeError:
            return  # no weak references (sqlite3's): no driver integration measures it
        _CLAIMED[key] = (ref, owner)


def claimed(connection: Any) -> bool:
    return id(connection) in _CLAIMED


def release_claims(owner: object) -> None:
    """Forget `owner`'s claims (its instrumentation stopped): the drivers measure them again."""
    for key, (_, found) in list(_CLAIMED.items()):
        if found is owner:
            _CLAIMED.pop(key, None)


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
