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


# db.query.summary (opt-in): semconv's "{operation} {target} {operation} {target} ..." from the
# SQL text. Operations: the statement's verb (as db.operation.name) and each SELECT, INSERT,
# UPDATE, DELETE, MERGE after it; targets: the names after FROM (and its comma list), JOIN, INTO,
# UPDATE and TABLE, as written. Never literals, columns, aliases or comments.
MAX_SUMMARY = 255  # semconv: relatively short; a longer one ends at the last whole part
_SUMMARY_OPERATIONS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"})
_NOT_OPERATION_AFTER = frozenset({"DO", "FOR", "ON"})  # DO UPDATE, FOR UPDATE, ON DELETE
_TARGET_AFTER = frozenset({"FROM", "JOIN", "INTO", "UPDATE", "TABLE"})
_BEFORE_TARGET = frozenset({"IF", "NOT", "EXISTS", "ONLY", "TABLE", "LATERAL"})
# Clauses that end a FROM list (a comma after them is no table list).
_END_FROM = frozenset(
    """WHERE GROUP ORDER HAVING LIMIT OFFSET FETCH FOR ON USING SET VALUES RETURNING UNION
    INTERSECT EXCEPT WINDOW SELECT""".split()  # noqa: SIM905
)
_PART = r"""(?:[^\W\d][\w$]*|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\])"""
_NAME = re.compile(rf"{_PART}(?:\s*\.\s*{_PART})*")
_DOT = re.compile(r"\s*\.\s*")


def query_summary(statement: str) -> str:
    """db.query.summary of a SQL statement (`SELECT users`, `INSERT orders SELECT carts`); the
    operation name alone (OTHER included) when nothing more is found."""
    return _cached_summary(statement) if len(statement) <= 4096 else _summary(statement)


def _summary(statement: str) -> str:
    first = _name(statement)
    if first == OTHER:
        return OTHER
    parts: list[str] = []
    size = -1
    depth = 0
    expect_target = False
    from_depth: int | None = None  # the depth of the FROM whose comma list is being read
    previous = ""
    resume = 0  # tokens before this offset were read as part of a target's name
    for token in _TOKEN.finditer(statement):
        if token.start() < resume:
            continue
        kind = token.lastgroup
        if kind == "skip":
            continue
        text = token.group()
        part: str | None = None
        if expect_target and (kind == "word" or text[:1] in '"`['):
            upper = text.upper()
            if kind == "word" and upper in _BEFORE_TARGET:
                previous = upper
                continue
            if kind != "word" or upper not in OPERATIONS:
                name = _NAME.match(statement, token.start())
                if name is not None:
                    part = _DOT.sub(".", name.group())
                    resume = name.end()
            expect_target = False
        if part is None and kind == "word":
            upper = text.upper()
            if not parts and upper == first:
                part = first
            elif upper in _SUMMARY_OPERATIONS and previous not in _NOT_OPERATION_AFTER:
                part = upper
            if upper in _TARGET_AFTER:
                expect_target = True
                if upper == "FROM":
                    from_depth = depth
            elif upper in _END_FROM and from_depth == depth:
                from_depth = None
            previous = upper
        elif part is None:
            expect_target = text == "," and from_depth == depth
            if kind == "open":
                depth += 1
            elif kind == "close":
                depth -= 1
                if from_depth is not None and depth < from_depth:
                    from_depth = None
            previous = text
        if part is not None:
            if size + 1 + len(part) > MAX_SUMMARY:
                break
            parts.append(part)
            size += 1 + len(part)
    return " ".join(parts) if parts else first


_cached_summary = functools.lru_cache(maxsize=512)(_summary)
