"""psycopg 3 without SQLAlchemy against a real PostgreSQL: sync and async connections,
transactions, errors with their SQLSTATE, psycopg_pool waits, pending requests and timeouts,
and SQLAlchemy's postgresql+psycopg engines counted once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg_pool
import pytest
import sqlalchemy as sa
from psycopg import sql

import otel_kit
import otel_kit._instrumentation.psycopg
from otel_kit import _support
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.integration.test_asyncpg import DURATION, MARKER, PASSWORD, operations, pool_state
from tests.integration.test_startup_imports import otel_kit_run

pytestmark = pytest.mark.integration

WAIT_S = 10  # the deadline of every wait on another thread


@pytest.fixture
def dsn(postgres_dsn: str) -> Iterator[str]:
    """`postgres_dsn` with a password, and a fresh `marker_table`."""
    dsn = postgres_dsn.replace("postgres@", f"postgres:{PASSWORD}@")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS marker_table")
        conn.execute("CREATE TABLE marker_table (id int PRIMARY KEY, name text)")
    yield dsn


def test_sync_statements_and_transactions(make_handle: MakeHandle, dsn: str) -> None:
    with psycopg.connect(dsn) as conn:  # before setup: measured all the same
        handle = make_handle()
        conn.execute("INSERT INTO marker_table VALUES (%s, %s)", (1, MARKER))  # + implicit BEGIN
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO marker_table VALUES (%s, %s)", [(2, "b"), (3, "c")])
        query = sql.SQL("SELECT {} FROM marker_table").format(sql.Identifier("name"))
        assert len(conn.execute(query).fetchall()) == 3
        conn.commit()
        conn.commit()  # no transaction open: psycopg sends nothing, no operation
        with conn.transaction():
            conn.execute("UPDATE marker_table SET name = %s WHERE id = 2", (MARKER,))
            with conn.transaction():
                conn.execute(b"DELETE FROM marker_table WHERE id = 3")
        with conn.cursor(name="server_side") as cursor:
            cursor.execute("SELECT id FROM marker_table ORDER BY id")
            assert cursor.fetchall() == [(1,), (2,)]
        conn.rollback()
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO marker_table VALUES (%s, %s)", (1, MARKER))
        conn.rollback()
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("FROBNICATE marker_table")
        conn.rollback()
        with otel_kit.not_measured():
            conn.execute("SELECT 1")
            conn.commit()
        text = handle.render().decode()
    assert operations(text) == {
        ("INSERT", None, None): 2,  # one execute, one executemany of 2 rows
        ("SELECT", None, None): 2,  # a composed query, a server-side cursor's DECLARE
        ("FETCH", None, None): 1,  # the server-side cursor's fetchall()
        ("CLOSE", None, None): 1,  # and its close
        ("COMMIT", None, None): 2,  # commit(), the transaction block's end
        ("BEGIN", None, None): 1,  # the transaction block's start
        ("SAVEPOINT", None, None): 1,
        ("RELEASE", None, None): 1,
        ("UPDATE", None, None): 1,
        ("DELETE", None, None): 1,
        ("ROLLBACK", None, None): 3,
        ("INSERT", "psycopg.errors.UniqueViolation", "23505"): 1,
        ("OTHER", "psycopg.errors.SyntaxError", "42601"): 1,
    }
    port = dsn.rsplit(":", 1)[1].split("/")[0]
    assert {labels["server_port"] for labels in series(text, DURATION)} == {port}
    for secret in (PASSWORD, MARKER, "marker_table", "FROBNICATE", "server_side"):
        assert secret not in text


async def test_async_statements(make_handle: MakeHandle, dsn: str) -> None:
    handle = make_handle()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("INSERT INTO marker_table VALUES (%s, %s)", (1, MARKER))
        async with conn.cursor() as cursor:
            await cursor.executemany("INSERT INTO marker_table VALUES (%s, %s)", [(2, "b")])
            await cursor.execute("SELECT count(*) FROM marker_table")
            assert await cursor.fetchone() == (2,)
        async with conn.transaction():
            await conn.execute("DELETE FROM marker_table WHERE id = 2")
        await conn.commit()  # autocommit: nothing sent, no operation
        with pytest.raises(psycopg.errors.UniqueViolation):
            await conn.execute("INSERT INTO marker_table VALUES (%s, %s)", (1, MARKER))
    assert operations(handle.render().decode()) == {
        ("INSERT", None, None): 2,
        ("SELECT", None, None): 1,
        ("BEGIN", None, None): 1,
        ("DELETE", None, None): 1,
        ("COMMIT", None, None): 1,
        ("INSERT", "psycopg.errors.UniqueViolation", "23505"): 1,
    }


def test_pool_waits_pending_timeout_and_counts(make_handle: MakeHandle, dsn: str) -> None:
    # psycopg_pool >= 3.2 checks each connection it hands out with an empty query, no operation.
    check = getattr(psycopg_pool.ConnectionPool, "check_connection", None)
    options = {} if check is None else {"check": check}
    pool = psycopg_pool.ConnectionPool(
        dsn, min_size=2, max_size=2, name="orders", open=True, **options
    )
    try:
        pool.wait(timeout=WAIT_S)  # before setup; measured from its first getconn()
        handle = make_handle()

        def state() -> dict[str, float]:
            return pool_state(handle.render().decode(), "orders")

        with pool.connection() as conn:
            conn.execute("SELECT 1")
        assert state() == {"idle": 2, "used": 0, "max": 2, "pending": 0, "timeouts": 0, "waits": 1}
        first, second = pool.getconn(), pool.getconn()
        assert state() == {"idle": 0, "used": 2, "max": 2, "pending": 0, "timeouts": 0, "waits": 3}
        with pytest.raises(psycopg_pool.PoolTimeout):
            pool.getconn(timeout=0.05)
        got: list[psycopg.Connection[object]] = []
        waiting = threading.Thread(target=lambda: got.append(pool.getconn(timeout=WAIT_S)))
        waiting.start()
        deadline = time.monotonic() + WAIT_S
        while state()["pending"] != 1:
            assert time.monotonic() < deadline, "the third getconn() never became pending"
            time.sleep(0.01)
        assert state() == {"idle": 0, "used": 2, "max": 2, "pending": 1, "timeouts": 1, "waits": 3}
        pool.putconn(first)
        waiting.join(WAIT_S)
        pool.putconn(second)
        pool.putconn(got[0])
        assert state() == {"idle": 2, "used": 0, "max": 2, "pending": 0, "timeouts": 1, "waits": 4}
        # The block's end commits (a COMMIT); a connection given back idle needs no reset.
        assert operations(handle.render().decode()) == {
            ("SELECT", None, None): 1,
            ("COMMIT", None, None): 1,
        }
    finally:
        pool.close()
    assert series(handle.render().decode(), "db_client_connection_count") == []


async def test_async_pool_named_from_its_conninfo(make_handle: MakeHandle, dsn: str) -> None:
    handle = make_handle()
    address = dsn.split("@")[1].rsplit("/", 1)[0]
    name = f"psycopg://{address}/otel_kit"
    async with psycopg_pool.AsyncConnectionPool(dsn, min_size=1, max_size=1, open=False) as pool:
        async with pool.connection() as conn:
            assert pool_state(handle.render().decode(), name)["used"] == 1
            with pytest.raises(psycopg_pool.PoolTimeout):
                await pool.getconn(timeout=0.05)
            await conn.execute("SELECT 1")
        text = handle.render().decode()
    assert pool_state(text, name) == {
        "idle": 1,
        "used": 0,
        "max": 1,
        "pending": 0,
        "timeouts": 1,
        "waits": 1,
    }
    assert operations(text) == {("SELECT", None, None): 1, ("COMMIT", None, None): 1}
    assert PASSWORD not in text


def test_sqlalchemy_engines_count_once(make_handle: MakeHandle, dsn: str) -> None:
    """The engine's connections are SQLAlchemy's (made before or after setup): its statements
    count once; a psycopg connection of the application beside it is still measured."""
    engine = sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as before:  # made before setup
        before.execute(sa.text("SELECT 1"))
        handle = make_handle()
        before.execute(sa.text("SELECT 2"))
        before.commit()
        with engine.connect() as after:  # a second connection, made after setup
            after.execute(sa.text("SELECT 3"))
            with psycopg.connect(dsn, autocommit=True) as raw:
                raw.execute("SELECT 4")
    text = handle.render().decode()
    engine.dispose()
    assert operations(text) == {
        ("SELECT", None, None): 3,
        ("COMMIT", None, None): 1,
        ("ROLLBACK", None, None): 1,  # `after` closed with its transaction open (SQLAlchemy's)
    }
    assert len(series(text, DURATION)) == 3  # one series per operation: one set, not two


def test_a_metrics_failure_never_reaches_the_application(
    make_handle: MakeHandle,
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handle = make_handle()

    def broken(query: object, connection: object) -> str:
        raise RuntimeError("broken")

    monkeypatch.setattr(otel_kit._instrumentation.psycopg, "_text", broken)
    monkeypatch.setattr(_support, "_failures", _support.LogOnce())  # logged once per process
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.commit()
    failures = [r.getMessage() for r in caplog.records if "psycopg" in r.getMessage()]
    assert failures == ["otel-kit: recording psycopg metrics failed; the application is unaffected"]
    assert operations(handle.render().decode()) == {}


def test_undo_restores_every_method(make_handle: MakeHandle) -> None:
    base = next(c for c in psycopg.Connection.__mro__ if "_exec_command" in c.__dict__)
    originals = {
        (owner, name): owner.__dict__[name]
        for owner, names in (
            (psycopg.Cursor, ("execute", "executemany")),
            (psycopg.AsyncCursor, ("execute", "executemany")),
            (psycopg.ServerCursor, ("execute",)),
            (psycopg.AsyncServerCursor, ("execute",)),
            (base, ("_exec_command",)),
            (psycopg_pool.ConnectionPool, ("getconn",)),
            (psycopg_pool.AsyncConnectionPool, ("getconn",)),
        )
        for name in names
    }
    handle = make_handle()
    assert all(owner.__dict__[name] is not f for (owner, name), f in originals.items())
    handle.shutdown()
    assert all(owner.__dict__[name] is f for (owner, name), f in originals.items())


def test_query_summary_when_asked_for(make_handle: MakeHandle, dsn: str) -> None:
    handle = make_handle(db_query_summary=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT name FROM marker_table WHERE name = %s", (MARKER,))
    text = handle.render().decode()
    assert [labels["db_query_summary"] for labels in series(text, DURATION)] == [
        "SELECT marker_table"
    ]
    assert MARKER not in text


def test_an_engine_instrumented_explicitly_counts_once(make_handle: MakeHandle, dsn: str) -> None:
    """SQLAlchemy's automatic instrumentation off, one engine given to instrument_engine(): its
    statements (the dialect's first queries too) count as without the psycopg integration."""

    def run(disabled: str) -> dict[tuple[str, str | None, str | None], float]:
        handle = make_handle(disabled_instrumentations=disabled)
        engine = sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
        handle.instrument_engine(engine)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return operations(handle.render().decode())

    alone = run("sqlalchemy,psycopg")
    assert alone == {
        ("SELECT", None, None): 3,  # the dialect's version() and current_schema(), then ours
        ("SHOW", None, None): 1,  # standard_conforming_strings
        ("ROLLBACK", None, None): 1,  # the connection closed with its transaction open
    }
    assert run("sqlalchemy") == alone


# Under `otel-kit run`, importing psycopg_pool sets up; its import imports psycopg first, whose
# hook runs while psycopg_pool is half made: both are instrumented all the same.
POOL_FIRST = """
import sys
from psycopg_pool import ConnectionPool
from otel_kit import _setup
with ConnectionPool(sys.argv[1], min_size=1, max_size=1, open=True) as pool:
    with pool.connection() as conn:
        conn.execute("SELECT 1")
print(_setup._current.render().decode())
"""


def test_otel_kit_run_instruments_psycopg_pool_imported_first(tmp_path: Path, dsn: str) -> None:
    (tmp_path / "job.py").write_text(POOL_FIRST)
    process = otel_kit_run("python", "job.py", dsn, cwd=tmp_path)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert value(stdout, DURATION, db_operation_name="SELECT") == 1
    assert value(stdout, "db_client_connection_wait_time_seconds_count") == 1
