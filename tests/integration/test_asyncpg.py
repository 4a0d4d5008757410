"""asyncpg without SQLAlchemy against a real PostgreSQL: statements of connections and pools,
errors with their SQLSTATE, pool waits, pending requests and a timeout, the undo."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
import pytest
import sqlalchemy as sa
from asyncpg.pool import Pool
from asyncpg.prepared_stmt import PreparedStatement
from sqlalchemy.ext.asyncio import create_async_engine

import otel_kit
import otel_kit._instrumentation.asyncpg
from otel_kit import _support
from tests.exposition import samples, series, value
from tests.handles import MakeHandle

pytestmark = pytest.mark.integration

DURATION = "db_client_operation_duration_seconds_count"
PASSWORD = "s3cret-never-exported"  # trust auth ignores it; it must never reach a label
MARKER = "param-marker-never-exported"
WAIT_S = 10  # the deadline of every wait on another task


@pytest.fixture
def dsn(postgres_dsn: str) -> Iterator[str]:
    yield postgres_dsn.replace("postgres@", f"postgres:{PASSWORD}@")


def pool_state(text: str, name: str) -> dict[str, float]:
    pool = {"db_client_connection_pool_name": name}
    count = "db_client_connection_count"
    return {
        "idle": value(text, count, **pool, db_client_connection_state="idle"),
        "used": value(text, count, **pool, db_client_connection_state="used"),
        "max": value(text, "db_client_connection_max", **pool),
        "pending": value(text, "db_client_connection_pending_requests", **pool),
        "timeouts": value(text, "db_client_connection_timeouts_total", **pool),
        "waits": value(text, "db_client_connection_wait_time_seconds_count", **pool),
    }


def operations(text: str, before: str = "") -> dict[tuple[str, str | None, str | None], float]:
    """(operation, error.type, db.response.status_code) -> count between `before` and `text`;
    asserts every series carries the server's labels."""
    out: dict[tuple[str, str | None, str | None], float] = {}
    for sign, exposition in ((1, text), (-1, before)):
        for (name, labels), count in samples(exposition).items():
            if name != DURATION:
                continue
            found = dict(labels)
            assert found["db_system_name"] == "postgresql"
            assert found["db_namespace"] == "otel_kit"
            assert found["server_address"] == "127.0.0.1"
            key = (
                found["db_operation_name"],
                found.get("error_type"),
                found.get("db_response_status_code"),
            )
            out[key] = out.get(key, 0) + sign * count
    return {key: count for key, count in out.items() if count}


async def test_statements_of_a_connection_made_before_setup(
    make_handle: MakeHandle, dsn: str
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        with otel_kit.not_measured():
            await conn.execute("DROP TABLE IF EXISTS marker_table")
            await conn.execute("CREATE TABLE marker_table (id int PRIMARY KEY, name text)")
        handle = make_handle()
        assert operations(handle.render().decode()) == {}

        await conn.execute("INSERT INTO marker_table VALUES ($1, $2)", 1, MARKER)
        await conn.executemany("INSERT INTO marker_table VALUES ($1, $2)", [(2, "b"), (3, "c")])
        assert len(await conn.fetch("SELECT * FROM marker_table WHERE name <> $1", MARKER)) == 2
        assert await conn.fetchval("SELECT count(*) FROM marker_table") == 3
        assert (await conn.fetchrow("SELECT name FROM marker_table WHERE id = $1", 1)) == (MARKER,)
        async with conn.transaction():
            await conn.execute("UPDATE marker_table SET name = $1 WHERE id = 2", MARKER)
        statement = await conn.prepare("DELETE FROM marker_table WHERE id = $1")  # not counted
        await statement.fetch(3)
        await conn.copy_records_to_table("marker_table", records=[(4, "d")])
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO marker_table VALUES ($1, $2)", 1, MARKER)
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await conn.execute("FROBNICATE marker_table")
        with otel_kit.not_measured():
            await conn.fetchval("SELECT 1")
        text = handle.render().decode()
    finally:
        await conn.close()

    port = dsn.rsplit(":", 1)[1].split("/")[0]
    assert operations(text) == {
        ("INSERT", None, None): 2,  # one execute, one executemany of 2 rows
        ("SELECT", None, None): 3,
        ("BEGIN", None, None): 1,
        ("UPDATE", None, None): 1,
        ("COMMIT", None, None): 1,
        ("DELETE", None, None): 1,
        ("COPY", None, None): 1,
        ("INSERT", "asyncpg.exceptions.UniqueViolationError", "23505"): 1,
        ("OTHER", "asyncpg.exceptions.PostgresSyntaxError", "42601"): 1,
    }
    assert {labels["server_port"] for labels in series(text, DURATION)} == {port}
    for secret in (PASSWORD, MARKER, "marker_table", "FROBNICATE"):
        assert secret not in text


async def test_pool_waits_pending_timeout_and_counts(make_handle: MakeHandle, dsn: str) -> None:
    pool: Pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)  # before setup
    address = dsn.split("@")[1].rsplit("/", 1)[0]
    name = f"asyncpg://{address}/otel_kit"
    try:
        handle = make_handle()

        def state() -> dict[str, float]:
            return pool_state(handle.render().decode(), name)

        assert await pool.fetchval("SELECT 1") == 1  # acquire, release (its reset: no operation)
        assert state() == {"idle": 1, "used": 0, "max": 2, "pending": 0, "timeouts": 0, "waits": 1}
        engine = sa.create_engine("sqlite://")  # SQLAlchemy's pools report beside asyncpg's
        with engine.connect():
            counted = series(handle.render().decode(), "db_client_connection_count")
        engine.dispose()
        pools = {labels["db_client_connection_pool_name"] for labels in counted}
        assert pools == {name, "sqlite:///:memory:"}
        first, second = await pool.acquire(), await pool.acquire()
        assert state() == {"idle": 0, "used": 2, "max": 2, "pending": 0, "timeouts": 0, "waits": 3}
        with pytest.raises(asyncio.TimeoutError):
            await pool.acquire(timeout=0.05)
        waiting = asyncio.ensure_future(pool.acquire())
        deadline = time.monotonic() + WAIT_S
        while state()["pending"] != 1:
            assert time.monotonic() < deadline, "the third acquire never became pending"
            await asyncio.sleep(0.01)
        assert state() == {"idle": 0, "used": 2, "max": 2, "pending": 1, "timeouts": 1, "waits": 3}
        await pool.release(first)
        third = await asyncio.wait_for(waiting, WAIT_S)
        await pool.release(second)
        await pool.release(third)
        with otel_kit.not_measured():  # neither the wait nor the statement
            assert await pool.fetchval("SELECT 2") == 2
        assert state() == {"idle": 2, "used": 0, "max": 2, "pending": 0, "timeouts": 1, "waits": 4}
        text = handle.render().decode()
        assert operations(text) == {("SELECT", None, None): 1}
        assert PASSWORD not in text
    finally:
        await pool.close()
    assert series(handle.render().decode(), "db_client_connection_count") == []


def test_undo_restores_every_method(make_handle: MakeHandle) -> None:
    originals = {
        (owner, name): owner.__dict__[name]
        for owner, names in (
            (asyncpg.Connection, ("execute", "fetch", "copy_to_table", "reset")),
            (PreparedStatement, ("fetch", "executemany")),
            (Pool, ("_acquire",)),
        )
        for name in names
    }
    handle = make_handle()
    assert all(owner.__dict__[name] is not f for (owner, name), f in originals.items())
    handle.shutdown()
    assert all(owner.__dict__[name] is f for (owner, name), f in originals.items())


async def test_sqlalchemy_engines_count_once(make_handle: MakeHandle, dsn: str) -> None:
    """An async engine's connections are SQLAlchemy's: its statements count once; an asyncpg
    connection of the application beside it is still measured."""
    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://"))
    async with engine.connect() as first:  # the dialect's own first queries, before setup
        await first.execute(sa.text("SELECT 1"))
    handle = make_handle()
    async with engine.connect() as again, engine.connect() as new:  # pooled; new after setup
        await again.execute(sa.text("SELECT 2"))
        await new.execute(sa.text("SELECT 3"))
        await new.commit()
    raw = await asyncpg.connect(dsn)
    try:
        await raw.fetchval("SELECT 4")
    finally:
        await raw.close()
    text = handle.render().decode()
    await engine.dispose()
    assert operations(text) == {
        ("SELECT", None, None): 3,
        ("COMMIT", None, None): 1,
        ("ROLLBACK", None, None): 1,  # `again` closed with its transaction open (SQLAlchemy's)
    }
    assert len(series(text, DURATION)) == 3  # one series per operation: one set, not two


async def test_a_metrics_failure_never_reaches_the_application(
    make_handle: MakeHandle,
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handle = make_handle()

    def broken(self: object, connection: object) -> object:
        raise RuntimeError("broken")

    monkeypatch.setattr(otel_kit._instrumentation.asyncpg._Instrumentation, "target", broken)
    monkeypatch.setattr(_support, "_failures", _support.LogOnce())  # logged once per process
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.execute("SELECT 2") == "SELECT 1"
    finally:
        await conn.close()
    failures = [r.getMessage() for r in caplog.records if "asyncpg" in r.getMessage()]
    assert failures == ["otel-kit: recording asyncpg metrics failed; the application is unaffected"]
    assert operations(handle.render().decode()) == {}
