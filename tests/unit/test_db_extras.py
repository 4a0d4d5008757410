"""Database extras asked for by real applications (issue 19), on real SQLite databases:
COMMIT/ROLLBACK timed as operations, the pool timeouts series at 0 from the first connection,
and `otel_kit.not_measured()` keeping start-up work out of the DB metrics."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event, orm
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import otel_kit
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.sqlalchemy_workload import (
    DURATION,
    TIMEOUTS,
    WAIT,
    items,
    operations,
    pool_state,
    sync_workload,
)

POOL = "sqlite:///app.db"
WAIT_S = 10  # the deadline of every wait on another thread or task


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as raw, raw:
        raw.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")
        raw.execute(
            "CREATE TABLE child (id INTEGER PRIMARY KEY, item_id INTEGER"
            " REFERENCES items(id) DEFERRABLE INITIALLY DEFERRED)"
        )
    yield path


def insert(conn: sa.Connection, *ids: int) -> None:
    for i in ids:
        conn.execute(items.insert().values(id=i, name=f"item {i}"))


# COMMIT and ROLLBACK.


def test_commit_and_rollback_are_operations_with_the_statements_labels(
    make_handle: MakeHandle, db: Path
) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        insert(conn, 1, 2)
    committed = handle.render().decode()
    assert operations(committed) == {("INSERT", None): 2, ("COMMIT", None): 1}

    with engine.connect() as conn:
        insert(conn, 3)
        conn.rollback()
    text = handle.render().decode()
    assert operations(text, committed) == {("INSERT", None): 1, ("ROLLBACK", None): 1}
    for labels in series(text, DURATION + "_count"):
        assert labels.keys() == {"db_system_name", "db_operation_name", "db_namespace"}
        assert (labels["db_system_name"], labels["db_namespace"]) == ("sqlite", "app.db")
    # The pool resetting each connection it got back (a driver rollback) is no operation.
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(items)).scalar() == 2
        conn.commit()
    assert operations(handle.render().decode(), text) == {("SELECT", None): 1, ("COMMIT", None): 1}
    engine.dispose()


def test_session_commit_rollback_and_close_with_an_open_transaction(
    make_handle: MakeHandle, db: Path
) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}")
    with orm.Session(engine) as session:
        session.execute(items.insert(), [{"id": 1, "name": "a"}])
        session.execute(items.insert(), [{"id": 2, "name": "b"}])
        session.commit()
    committed = handle.render().decode()
    assert operations(committed) == {("INSERT", None): 2, ("COMMIT", None): 1}

    with pytest.raises(sa.exc.IntegrityError), orm.Session(engine) as session, session.begin():
        session.execute(items.insert(), [{"id": 1, "name": "duplicate"}])
    rolled_back = handle.render().decode()
    expected = {("INSERT", "sqlite3.IntegrityError"): 1, ("ROLLBACK", None): 1}
    assert operations(rolled_back, committed) == expected

    # A read-only request's session: closing it rolls its transaction back (the database does).
    with orm.Session(engine) as session:
        assert len(session.execute(sa.select(items)).all()) == 2
    expected = {("SELECT", None): 1, ("ROLLBACK", None): 1}
    assert operations(handle.render().decode(), rolled_back) == expected
    engine.dispose()


async def test_async_commit_and_rollback(make_handle: MakeHandle, db: Path) -> None:
    handle = make_handle()
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    async with engine.begin() as conn:
        await conn.run_sync(insert, 1, 2)
    async with engine.connect() as conn:
        await conn.run_sync(insert, 3)
        await conn.rollback()
    expected = {("INSERT", None): 3, ("COMMIT", None): 1, ("ROLLBACK", None): 1}
    assert operations(handle.render().decode(), db_system_name="sqlite") == expected
    await engine.dispose()


def test_failed_commit_has_its_error_type(make_handle: MakeHandle, db: Path) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}")
    event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys=ON"))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # checked at COMMIT
        conn.exec_driver_sql("INSERT INTO child VALUES (1, 99)")
    expected = {("INSERT", None): 1, ("COMMIT", "sqlite3.IntegrityError"): 1}
    assert operations(handle.render().decode()) == expected
    engine.dispose()


def test_commit_sent_as_sql_counts_once(make_handle: MakeHandle, db: Path) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        insert(conn, 1)
        conn.exec_driver_sql("COMMIT")  # SQLAlchemy's transaction stays open: closed below
    first = handle.render().decode()
    expected = {("INSERT", None): 1, ("COMMIT", None): 1, ("ROLLBACK", None): 1}
    assert operations(first) == expected

    # AUTOCOMMIT: SQLAlchemy's commit() and its rollback at close do nothing, nor are recorded.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("BEGIN")
        insert(conn, 2)
        conn.exec_driver_sql("COMMIT")
        conn.commit()
    expected = {("BEGIN", None): 1, ("INSERT", None): 1, ("COMMIT", None): 1}
    assert operations(handle.render().decode(), first) == expected
    engine.dispose()


def test_invalidated_connection_records_no_rollback(make_handle: MakeHandle, db: Path) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        insert(conn, 1)
        conn.invalidate()  # gone: SQLAlchemy asks no driver to roll back
    assert operations(handle.render().decode()) == {("INSERT", None): 1}
    engine.dispose()


# The pool timeouts series from the start.


def test_timeouts_series_is_zero_from_the_first_connection(
    make_handle: MakeHandle, db: Path
) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}", pool_size=1, max_overflow=0, pool_timeout=0.1)
    other = sa.create_engine(f"sqlite:///{db}", poolclass=NullPool, logging_name="other")
    assert series(handle.render().decode(), TIMEOUTS) == []  # no pool used yet
    with engine.connect(), other.connect():
        pass
    text = handle.render().decode()
    assert sorted(series(text, TIMEOUTS), key=str) == [
        {"db_client_connection_pool_name": "other"},
        {"db_client_connection_pool_name": POOL},
    ]
    assert value(text, TIMEOUTS) == 0
    assert "# TYPE db_client_connection_timeouts_total counter" in text
    with engine.connect(), pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    text = handle.render().decode()
    assert value(text, TIMEOUTS, db_client_connection_pool_name=POOL) == 1
    assert value(text, TIMEOUTS, db_client_connection_pool_name="other") == 0
    engine.dispose()
    other.dispose()


async def test_timeouts_series_is_zero_for_an_async_engine(
    make_handle: MakeHandle, db: Path
) -> None:
    handle = make_handle()
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    async with engine.connect():
        pass
    assert series(handle.render().decode(), TIMEOUTS) == [
        {"db_client_connection_pool_name": "sqlite+aiosqlite:///app.db"}
    ]
    assert value(handle.render().decode(), TIMEOUTS) == 0
    await engine.dispose()


# not_measured().


def test_not_measured_records_nothing_inside(make_handle: MakeHandle, db: Path) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}", insertmanyvalues_page_size=2)
    with otel_kit.not_measured():
        with engine.connect() as conn:  # the workload: failures, batches, COMMIT, ROLLBACK
            sync_workload(conn)
        held = engine.connect()  # checked out inside, returned outside
    inside = handle.render().decode()
    assert series(inside, DURATION + "_count") == []
    assert pool_state(inside, POOL) == {
        "idle": 0, "used": 1, "pending": 0, "timeouts": 0, "waits": 0,
    }  # fmt: skip
    held.close()
    with engine.connect() as conn:
        insert(conn, 10)
        conn.commit()
    text = handle.render().decode()
    assert operations(text) == {("INSERT", None): 1, ("COMMIT", None): 1}
    assert pool_state(text, POOL) == {"idle": 1, "used": 0, "pending": 0, "timeouts": 0, "waits": 1}
    engine.dispose()


def test_not_measured_skips_waits_and_timeouts_inside(make_handle: MakeHandle, db: Path) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}", pool_size=1, max_overflow=0, pool_timeout=0.1)
    with engine.connect():
        with otel_kit.not_measured(), pytest.raises(sa.exc.TimeoutError):
            engine.connect()
        assert pool_state(handle.render().decode(), POOL)["pending"] == 0
    assert value(handle.render().decode(), TIMEOUTS, db_client_connection_pool_name=POOL) == 0
    assert (
        value(handle.render().decode(), WAIT + "_count", db_client_connection_pool_name=POOL) == 1
    )
    engine.dispose()


def test_not_measured_nests_and_works_entered_before_setup(
    make_handle: MakeHandle, db: Path
) -> None:
    engine = sa.create_engine(f"sqlite:///{db}")
    with otel_kit.not_measured():
        handle = make_handle()
        with otel_kit.not_measured():
            pass
        with engine.connect() as conn:  # still inside the outer block
            conn.execute(sa.text("SELECT 1"))
    assert series(handle.render().decode(), DURATION + "_count") == []
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    expected = {("SELECT", None): 1, ("ROLLBACK", None): 1}
    assert operations(handle.render().decode()) == expected
    engine.dispose()


def test_not_measured_in_one_thread_leaves_another_measured(
    make_handle: MakeHandle, db: Path
) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}", pool_size=2)
    entered, others_done = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def migrate() -> None:
        try:
            with otel_kit.not_measured():
                entered.set()
                assert others_done.wait(WAIT_S), "the measured thread never finished"
                with engine.begin() as conn:
                    insert(conn, 1, 2, 3)
        except BaseException as error:
            failures.append(error)

    migration = threading.Thread(target=migrate)
    migration.start()
    assert entered.wait(WAIT_S), "the migration thread never entered not_measured()"
    with engine.begin() as conn:  # while the other thread is inside not_measured()
        insert(conn, 10)
    others_done.set()
    migration.join(WAIT_S)
    assert not migration.is_alive() and failures == []
    text = handle.render().decode()
    assert operations(text) == {("INSERT", None): 1, ("COMMIT", None): 1}
    with engine.connect() as conn:  # the migration's rows are there: it did run
        assert conn.execute(sa.select(sa.func.count()).select_from(items)).scalar() == 4
    engine.dispose()


async def test_not_measured_in_one_task_leaves_another_measured(
    make_handle: MakeHandle, db: Path
) -> None:
    handle = make_handle()
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    entered, request_done = asyncio.Event(), asyncio.Event()

    async def migrate() -> None:
        with otel_kit.not_measured():
            entered.set()
            await asyncio.wait_for(request_done.wait(), WAIT_S)
            async with engine.begin() as conn:
                await conn.run_sync(insert, 1, 2)
                # A task started inside inherits the context: not measured either.
                await asyncio.create_task(conn.execute(sa.text("SELECT 1")))

    async def request() -> None:
        await asyncio.wait_for(entered.wait(), WAIT_S)
        async with engine.begin() as conn:
            await conn.run_sync(insert, 10)
        request_done.set()

    await asyncio.wait_for(asyncio.gather(migrate(), request()), WAIT_S)
    text = handle.render().decode()
    assert operations(text) == {("INSERT", None): 1, ("COMMIT", None): 1}
    await engine.dispose()


def test_not_measured_is_public_and_cheap_to_import() -> None:
    assert "not_measured" in otel_kit.__all__
    assert otel_kit.not_measured.__doc__ and "migrations" in otel_kit.not_measured.__doc__
    check = (
        "from otel_kit import not_measured\n"
        "with not_measured(): pass\n"
        "import sys; print('opentelemetry.sdk' in sys.modules, 'sqlalchemy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# db.query.summary (opt-in).


def summaries(text: str) -> dict[tuple[str, str | None], float]:
    """(db.operation.name, db.query.summary) -> observations."""
    out: dict[tuple[str, str | None], float] = {}
    for labels in series(text, DURATION + "_count"):
        key = (labels["db_operation_name"], labels.get("db_query_summary"))
        out[key] = out.get(key, 0) + value(text, DURATION + "_count", **labels)
    return out


def test_query_summary_is_off_by_default(make_handle: MakeHandle, db: Path) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        insert(conn, 1)
    assert summaries(handle.render().decode()) == {("INSERT", None): 1, ("COMMIT", None): 1}
    engine.dispose()


def test_query_summary_names_the_tables(make_handle: MakeHandle, db: Path) -> None:
    handle = make_handle(db_query_summary=True)
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        insert(conn, 1, 2)
        conn.exec_driver_sql("INSERT INTO child (id, item_id) SELECT id, id FROM items")
        conn.execute(sa.select(items).where(items.c.name == "secret literal")).all()
        conn.exec_driver_sql(
            "SELECT i.name FROM items i JOIN child c ON c.item_id = i.id WHERE i.id IN (1, 2)"
        ).all()
        conn.exec_driver_sql("SELECT count(*) FROM (SELECT id FROM child)").all()
    with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    text = handle.render().decode()
    assert summaries(text) == {
        ("INSERT", "INSERT items"): 2,
        ("INSERT", "INSERT child SELECT items"): 1,
        ("SELECT", "SELECT items"): 1,
        ("SELECT", "SELECT items child"): 1,
        ("SELECT", "SELECT SELECT child"): 1,
        ("COMMIT", "COMMIT"): 1,
        ("SELECT", "SELECT no_such_table"): 1,  # failed: the same summary, with error.type
        ("ROLLBACK", "ROLLBACK"): 1,
    }
    assert "secret" not in text
    engine.dispose()


def test_query_summaries_are_bounded_by_half_the_cardinality_limit(
    make_handle: MakeHandle, db: Path
) -> None:
    with contextlib.closing(sqlite3.connect(db)) as raw, raw:
        for i in range(8):
            raw.execute(f"CREATE TABLE t{i} (id INTEGER)")
    handle = make_handle(db_query_summary=True, cardinality_limit=10)
    engine = sa.create_engine(f"sqlite:///{db}", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for i in range(8):
            conn.exec_driver_sql(f"SELECT id FROM t{i}").all()
        conn.exec_driver_sql("SELECT id FROM t0").all()  # admitted already: keeps its summary
    text = handle.render().decode()
    assert summaries(text) == {
        **{("SELECT", f"SELECT t{i}"): 1 for i in range(1, 5)},
        ("SELECT", "SELECT t0"): 2,
        ("SELECT", "SELECT"): 3,  # t5, t6, t7: the 6th distinct summary and after
    }
    assert "otel_metric_overflow" not in text
    engine.dispose()
