"""SQLAlchemy statement and pool metrics against a real PostgreSQL (psycopg and asyncpg)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import otel_kit
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.sqlalchemy_workload import (
    DURATION,
    MAX,
    TIMEOUTS,
    async_workload,
    expected,
    items,
    metadata,
    operations,
    pool_state,
    status_codes,
    sync_workload,
)

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-never-exported"  # trust auth ignores it; it must never reach a label


@pytest.fixture
def url(postgres_dsn: str) -> Iterator[str]:
    """`postgres_dsn` with a password and a fresh `items` table."""
    dsn = postgres_dsn.replace("postgres@", f"postgres:{PASSWORD}@")
    engine = sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        metadata.drop_all(conn)
        metadata.create_all(conn)
    engine.dispose()
    yield dsn


def test_psycopg_statements_and_pool(make_handle: MakeHandle, url: str) -> None:
    address = url.split("@")[1].rsplit("/", 1)[0]
    pool = f"postgresql+psycopg://{address}/otel_kit"
    engine = sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://"),
        insertmanyvalues_page_size=2,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.2,
    )
    with engine.connect() as conn:  # before setup: this engine's first connect is not counted
        conn.execute(sa.select(items)).all()
    handle = make_handle()

    with engine.connect() as conn:
        sync_workload(conn)
        held = pool_state(handle.render().decode(), pool)
        with pytest.raises(sa.exc.TimeoutError):
            engine.connect()
    text = handle.render().decode()
    assert operations(text, db_system_name="postgresql") == expected(
        "psycopg.errors.UniqueViolation", "psycopg.errors.UndefinedTable"
    )
    assert status_codes(text) == {
        ("INSERT", "psycopg.errors.UniqueViolation", "23505"): 1,
        ("SELECT", "psycopg.errors.UndefinedTable", "42P01"): 1,
    }
    assert {labels["db_namespace"] for labels in series(text, DURATION + "_count")} == {"otel_kit"}
    host, port = address.rsplit(":", 1)  # the URL's, as configured
    assert {
        (labels["server_address"], labels["server_port"])
        for labels in series(text, DURATION + "_count")
    } == {(host, port)}
    assert held == {"idle": 0, "used": 1, "pending": 0, "timeouts": 0, "waits": 1}
    assert pool_state(text, pool) == {"idle": 1, "used": 0, "pending": 0, "timeouts": 1, "waits": 1}
    assert value(text, MAX, db_client_connection_pool_name=pool) == 1
    assert PASSWORD not in text and "postgres@" not in text and "no_such_table" not in text
    engine.dispose()


async def test_asyncpg_statements_and_pool(make_handle: MakeHandle, url: str) -> None:
    handle = make_handle()
    address = url.split("@")[1].rsplit("/", 1)[0]
    pool = f"postgresql+asyncpg://{address}/otel_kit"
    engine = create_async_engine(
        url.replace("postgresql://", "postgresql+asyncpg://"),
        insertmanyvalues_page_size=2,
        pool_size=2,
        max_overflow=1,
        pool_timeout=0.2,
    )
    async with engine.connect() as conn:  # the first connect runs the dialect's own queries
        await conn.execute(sa.select(items))
    before = handle.render().decode()

    async with engine.connect() as conn:
        await async_workload(conn)
        held = pool_state(handle.render().decode(), pool)
        second, third = await engine.connect().start(), await engine.connect().start()
        with pytest.raises(sa.exc.TimeoutError):
            await engine.connect().start()
        full = pool_state(handle.render().decode(), pool)
        await second.close()
        await third.close()
    text = handle.render().decode()
    assert operations(text, before, db_system_name="postgresql") == expected(
        "asyncpg.exceptions.UniqueViolationError", "asyncpg.exceptions.UndefinedTableError"
    )
    assert status_codes(text) == {
        ("INSERT", "asyncpg.exceptions.UniqueViolationError", "23505"): 1,
        ("SELECT", "asyncpg.exceptions.UndefinedTableError", "42P01"): 1,
    }
    host, port = address.rsplit(":", 1)
    for labels in series(text, DURATION + "_count"):
        assert (labels["server_address"], labels["server_port"]) == (host, port)
    assert held == {"idle": 0, "used": 1, "pending": 0, "timeouts": 0, "waits": 2}
    assert full == {"idle": 0, "used": 3, "pending": 0, "timeouts": 1, "waits": 4}
    assert pool_state(text, pool) == {"idle": 2, "used": 0, "pending": 0, "timeouts": 1, "waits": 4}
    assert value(text, MAX, db_client_connection_pool_name=pool) == 3
    assert PASSWORD not in text
    await engine.dispose()
    assert series(handle.render().decode(), "db_client_connection_count") == []


def test_psycopg_commit_rollback_and_savepoints(make_handle: MakeHandle, url: str) -> None:
    handle = make_handle()
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    address = url.split("@")[1].rsplit("/", 1)[0]
    with engine.connect():  # the first connect runs the dialect's own queries
        first = handle.render().decode()
    assert (
        value(
            first,
            TIMEOUTS,
            db_client_connection_pool_name=f"postgresql+psycopg://{address}/otel_kit",
        )
        == 0
    )
    assert series(first, TIMEOUTS) == [
        {"db_client_connection_pool_name": f"postgresql+psycopg://{address}/otel_kit"}
    ]

    with engine.begin() as conn:
        conn.execute(items.insert(), [{"id": 1, "name": "a"}])
        conn.execute(items.insert().values(id=2, name="b"))
    committed = handle.render().decode()
    assert operations(committed, first) == {("INSERT", None): 2, ("COMMIT", None): 1}

    with engine.connect() as conn:
        conn.execute(items.insert().values(id=3, name="c"))
        conn.rollback()
    rolled_back = handle.render().decode()
    assert operations(rolled_back, committed) == {("INSERT", None): 1, ("ROLLBACK", None): 1}

    # Savepoints are the SQL SQLAlchemy sends: ROLLBACK TO SAVEPOINT is a ROLLBACK statement.
    with engine.begin() as conn:
        savepoint = conn.begin_nested()
        conn.execute(items.insert().values(id=4, name="d"))
        savepoint.rollback()
        with conn.begin_nested():
            conn.execute(items.insert().values(id=5, name="e"))
    expected = {
        ("SAVEPOINT", None): 2,
        ("INSERT", None): 2,
        ("ROLLBACK", None): 1,
        ("RELEASE", None): 1,
        ("COMMIT", None): 1,
    }
    text = handle.render().decode()
    assert operations(text, rolled_back, db_system_name="postgresql") == expected
    with engine.connect() as conn:
        assert conn.execute(sa.select(items.c.id).order_by(items.c.id)).scalars().all() == [1, 2, 5]
    engine.dispose()


async def test_asyncpg_commit_rollback_and_not_measured(make_handle: MakeHandle, url: str) -> None:
    handle = make_handle()
    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://"))
    with otel_kit.not_measured():  # e.g. migrations at start-up, first connect included
        async with engine.begin() as conn:
            await conn.execute(items.insert().values(id=1, name="migrated"))
    assert series(handle.render().decode(), DURATION + "_count") == []

    async with engine.begin() as conn:
        await conn.execute(items.insert().values(id=2, name="a"))
        await conn.execute(items.insert().values(id=3, name="b"))
    async with engine.connect() as conn:
        await conn.execute(items.delete().where(items.c.id == 1))
        await conn.rollback()
    expected = {
        ("INSERT", None): 2,
        ("COMMIT", None): 1,
        ("DELETE", None): 1,
        ("ROLLBACK", None): 1,
    }
    assert operations(handle.render().decode(), db_system_name="postgresql") == expected
    await engine.dispose()


def test_psycopg_syntax_error_and_failed_commit_carry_sqlstate(
    make_handle: MakeHandle, url: str
) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE child (id INTEGER, parent_id INTEGER REFERENCES parent (id)"
            " DEFERRABLE INITIALLY DEFERRED)"
        )
    handle = make_handle()
    with engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError):
        conn.exec_driver_sql("SELEC 1")  # not a verb: OTHER
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # checked at COMMIT
        conn.exec_driver_sql("INSERT INTO child VALUES (1, 99)")
    assert status_codes(handle.render().decode()) == {
        ("OTHER", "psycopg.errors.SyntaxError", "42601"): 1,
        ("COMMIT", "psycopg.errors.ForeignKeyViolation", "23503"): 1,
    }
    engine.dispose()
