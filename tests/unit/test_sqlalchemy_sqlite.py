"""SQLAlchemy statement and pool metrics against real SQLite databases (sqlite3 and aiosqlite).

The workload (tests/sqlalchemy_workload.py) is the one tests/integration/test_sqlalchemy_postgres.py
runs against PostgreSQL.
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import (
    AsyncAdaptedQueuePool,
    NullPool,
    Pool,
    QueuePool,
    SingletonThreadPool,
    StaticPool,
)
from sqlalchemy.pool.base import _ConnectionRecord

from otel_kit._instrumentation._sql import OPERATIONS, OTHER, operation_name
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.sqlalchemy_workload import (
    COUNT,
    DURATION,
    MAX,
    TIMEOUTS,
    WAIT,
    async_workload,
    expected,
    operations,
    pool_state,
    status_codes,
    sync_workload,
)

# What the workload's two failures record on SQLite: sqlite3's classes (aiosqlite raises them
# too), no db.response.status_code (SQLite has no SQLSTATE).
SQLITE_FAILURES = expected("sqlite3.IntegrityError", "sqlite3.OperationalError")


def create_items_table(path: Path) -> None:
    # sqlite3's own context manager commits but does not close (Python 3.13 warns).
    with contextlib.closing(sqlite3.connect(path)) as raw, raw:
        raw.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "app.db"
    create_items_table(path)
    yield path


def test_sync_statements_engine_created_before_setup(make_handle: MakeHandle, db: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{db}", insertmanyvalues_page_size=2)
    handle = make_handle()
    with engine.connect() as conn:
        sync_workload(conn)
    text = handle.render().decode()
    assert operations(text) == SQLITE_FAILURES
    assert status_codes(text) == {
        ("INSERT", "sqlite3.IntegrityError", None): 1,
        ("SELECT", "sqlite3.OperationalError", None): 1,
    }
    for labels in series(text, DURATION + "_count"):
        assert labels["db_system_name"] == "sqlite"
        assert labels["db_namespace"] == "app.db"
        assert "server_address" not in labels and "server_port" not in labels  # no server
    assert "no_such_table" not in text and "bulk" not in text
    engine.dispose()


def test_statement_duration_lands_in_its_bucket(make_handle: MakeHandle, db: Path) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}")

    @event.listens_for(engine, "connect")
    def add_sleep(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.create_function("pause", 1, lambda s: time.sleep(s) or s)

    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pause(0.3)")).all()
    text = handle.render().decode()
    bucket = DURATION + "_bucket"
    # semconv's DB advice, not the HTTP buckets
    selects = [labels for labels in series(text, bucket) if labels["db_operation_name"] == "SELECT"]
    bounds = [labels["le"] for labels in selects]
    assert bounds == ["0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1.0", "5.0", "10.0", "+Inf"]
    assert value(text, bucket, db_operation_name="SELECT", le="0.1") == 0
    assert value(text, bucket, db_operation_name="SELECT", le="0.5") == 1
    assert value(text, DURATION + "_sum", db_operation_name="SELECT") >= 0.3
    engine.dispose()


async def test_async_statements_and_pool(make_handle: MakeHandle, db: Path) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{db}",
        insertmanyvalues_page_size=2,
        poolclass=AsyncAdaptedQueuePool,  # the default from SQLAlchemy 2.0.38 (NullPool before)
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.2,
    )
    handle = make_handle()
    pool = "sqlite+aiosqlite:///app.db"
    async with engine.connect() as conn:
        await async_workload(conn)
        held = pool_state(handle.render().decode(), pool)
        with pytest.raises(sa.exc.TimeoutError):
            await engine.connect().start()
    text = handle.render().decode()
    assert operations(text, db_system_name="sqlite") == SQLITE_FAILURES
    assert held == {"idle": 0, "used": 1, "pending": 0, "timeouts": 0, "waits": 1}
    assert pool_state(text, pool) == {"idle": 1, "used": 0, "pending": 0, "timeouts": 1, "waits": 1}
    assert value(text, MAX, db_client_connection_pool_name=pool) == 1
    await engine.dispose()


def test_pool_used_idle_timeouts(make_handle: MakeHandle, db: Path) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}", pool_size=1, max_overflow=0, pool_timeout=0.2)
    assert isinstance(engine.pool, QueuePool)
    pool = "sqlite:///app.db"
    assert series(handle.render().decode(), COUNT) == []  # a pool appears once it is used

    with engine.connect():
        text = handle.render().decode()
        assert pool_state(text, pool) == {
            "idle": 0, "used": 1, "pending": 0, "timeouts": 0, "waits": 1,
        }  # fmt: skip
        assert value(text, MAX, db_client_connection_pool_name=pool) == 1
        with pytest.raises(sa.exc.TimeoutError):
            engine.connect()
    text = handle.render().decode()
    assert pool_state(text, pool) == {"idle": 1, "used": 0, "pending": 0, "timeouts": 1, "waits": 1}

    with engine.connect() as conn:
        conn.invalidate()  # closed, so neither used nor idle afterwards
    assert pool_state(handle.render().decode(), pool)["idle"] == 0
    with engine.connect() as conn:
        conn.connection.invalidate(soft=True)  # replaced at its next checkout, as pool_recycle
    with engine.connect():
        assert pool_state(handle.render().decode(), pool)["used"] == 1
    state = pool_state(handle.render().decode(), pool)
    assert (state["idle"], state["used"]) == (1, 0)

    engine.dispose()  # the engine's old pool leaves the gauges at once; counters stay
    text = handle.render().decode()
    assert series(text, COUNT) == [] and series(text, MAX) == []
    assert value(text, TIMEOUTS, db_client_connection_pool_name=pool) == 1


def test_pool_pending_request(make_handle: MakeHandle, db: Path) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}", pool_size=1, max_overflow=0, pool_timeout=10)
    pool = "sqlite:///app.db"
    got: list[Connection] = []
    with engine.connect():
        # A second caller waits for the only connection: one pending request until it is free.
        waiter = threading.Thread(target=lambda: got.append(engine.connect()))
        waiter.start()
        deadline = time.monotonic() + 10
        while pool_state(handle.render().decode(), pool)["pending"] != 1:
            assert time.monotonic() < deadline, "the waiting checkout never showed as pending"
            time.sleep(0.01)
    waiter.join(timeout=10)
    assert pool_state(handle.render().decode(), pool) == {
        "idle": 0, "used": 1, "pending": 0, "timeouts": 0, "waits": 2,
    }  # fmt: skip
    got[0].close()
    assert pool_state(handle.render().decode(), pool)["used"] == 0
    engine.dispose()


def test_pool_name_prefers_logging_name_and_memory_namespace(make_handle: MakeHandle) -> None:
    handle = make_handle()
    engine = sa.create_engine("sqlite://", logging_name="orders-db")
    assert isinstance(engine.pool, SingletonThreadPool)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        inside = handle.render().decode()
    text = handle.render().decode()
    assert (
        value(
            inside,
            COUNT,
            db_client_connection_pool_name="orders-db",
            db_client_connection_state="used",
        )
        == 1
    )
    assert (
        value(
            text,
            COUNT,
            db_client_connection_pool_name="orders-db",
            db_client_connection_state="used",
        )
        == 0
    )
    assert (
        value(
            text,
            COUNT,
            db_client_connection_pool_name="orders-db",
            db_client_connection_state="idle",
        )
        == 1
    )
    assert series(text, MAX) == []  # SingletonThreadPool has no hard limit
    assert operations(text, db_namespace=":memory:") == {("SELECT", None): 1, ("ROLLBACK", None): 1}
    engine.pool.dispose()  # closes its connection: Python 3.13 warns of unclosed ones
    del engine, conn
    gc.collect()
    assert series(handle.render().decode(), COUNT) == []


@pytest.mark.parametrize(
    ("poolclass", "idle_after", "max_"), [(NullPool, 0, None), (StaticPool, 1, 1)]
)
def test_other_pool_classes(
    make_handle: MakeHandle, db: Path, poolclass: type[Pool], idle_after: int, max_: int | None
) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}", poolclass=poolclass)
    pool = "sqlite:///app.db"
    for _ in range(3):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            assert pool_state(handle.render().decode(), pool)["used"] == 1
    text = handle.render().decode()
    assert pool_state(text, pool) == {
        "idle": idle_after, "used": 0, "pending": 0, "timeouts": 0, "waits": 3,
    }  # fmt: skip
    maxima = {
        labels["db_client_connection_pool_name"]: value(text, MAX, **labels)
        for labels in series(text, MAX)
    }
    assert maxima == ({pool: max_} if max_ else {})
    engine.dispose()


def test_disabled_records_nothing(make_handle: MakeHandle, db: Path) -> None:
    original = Engine.raw_connection
    handle = make_handle(disabled_instrumentations="sqlalchemy")
    assert Engine.raw_connection is original
    engine = sa.create_engine(f"sqlite:///{db}", insertmanyvalues_page_size=2)
    with engine.connect() as conn:
        sync_workload(conn)
    text = handle.render().decode()
    assert series(text, DURATION + "_count") == []
    assert series(text, COUNT) == [] and series(text, WAIT + "_count") == []
    engine.dispose()


def listener_counts() -> tuple[int, ...]:
    # SQLAlchemy keeps class-level listeners per class in `_clslevel` (no public count);
    # handle_error is a Dialect event, which listening on Engine places on Dialect.
    return tuple(
        len(getattr(cls.dispatch, name)._clslevel.get(cls, ()))
        for cls, name in [
            (Engine, "before_cursor_execute"),
            (Engine, "after_execute"),
            (Dialect, "handle_error"),
            (Pool, "checkin"),
            (Pool, "close"),
            (Pool, "detach"),
        ]
    )


def test_shutdown_removes_every_listener_and_wrapper(make_handle: MakeHandle, db: Path) -> None:
    original, before = Engine.raw_connection, listener_counts()
    connection_methods = ["_exec_insertmany_context", "_commit_impl", "_rollback_impl"]
    originals = [vars(Connection)[name] for name in connection_methods]
    checkin = vars(_ConnectionRecord)["checkin"]
    handle = make_handle()
    assert Engine.raw_connection is not original
    assert vars(_ConnectionRecord)["checkin"] is not checkin  # no checkin event either
    # Statements and their failures are timed on the dialect: no statement listener on Engine,
    # no handle_error on Dialect (see the next test).
    assert listener_counts() == (*before[:4], *(n + 1 for n in before[4:]))
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert "do_execute" in vars(engine.dialect)
    wrapped = [vars(Connection)[name] for name in connection_methods]
    assert not any(w is o for w, o in zip(wrapped, originals, strict=True))
    handle.shutdown()
    assert Engine.raw_connection is original
    assert vars(_ConnectionRecord)["checkin"] is checkin
    assert listener_counts() == before
    assert not {"do_execute", "do_executemany", "do_execute_no_params"} & set(vars(engine.dialect))
    assert [vars(Connection)[name] for name in connection_methods] == originals
    engine.dispose()

    # A second setup measures each statement once.
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert operations(handle.render().decode()) == {("SELECT", None): 1, ("ROLLBACK", None): 1}
    engine.dispose()


def test_statements_stay_on_sqlalchemy_fast_path() -> None:
    """An Engine statement listener (`_has_events`) would put every connection on SQLAlchemy's
    slower event path, a dialect event (`handle_error`) every statement on the dialect's; in a
    fresh process, measuring must set neither."""
    script = (
        "import sqlalchemy as sa, otel_kit\n"
        "from starlette.applications import Starlette\n"
        "otel_kit.setup_metrics(Starlette())  # served on an app nothing calls: no port\n"
        "engine = sa.create_engine('sqlite://')\n"
        "with engine.connect() as conn:\n"
        "    conn.execute(sa.text('SELECT 1'))\n"
        "    print(conn._has_events, engine._has_events, sa.engine.Engine._has_events)\n"
        "    print(engine.dialect._has_events, type(engine.dialect)._has_events)\n"
        "print(otel_kit.setup_metrics().render().decode().count('db_client_operation_duration_seconds_count{'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False"] * 5 + ["2"]  # SELECT, ROLLBACK


# Operation names.


@pytest.mark.parametrize(
    ("statement", "name"),
    [
        ("SELECT 1", "SELECT"),
        ("  \n\tselect * from t", "SELECT"),
        ("-- note\n/* a\n comment */ ((SELECT 1)) UNION (SELECT 2)", "SELECT"),
        ("insert into t values (1)", "INSERT"),
        ("WITH a AS (SELECT 1), b(x) AS (SELECT 2) UPDATE t SET x = 1", "UPDATE"),
        ("with recursive r as (select 1 union all select 1 from r) select * from r", "SELECT"),
        ("WITH d AS (DELETE FROM t RETURNING *) INSERT INTO log SELECT * FROM d", "INSERT"),
        ("WITH a AS (SELECT ')') DELETE FROM t", "DELETE"),
        ("(WITH a AS (SELECT 1) SELECT * FROM a)", "SELECT"),
        ("PRAGMA table_info(t)", "PRAGMA"),
        ("SAVEPOINT sa_1", "SAVEPOINT"),
        ("users_table_dump", OTHER),
        ("'SELECT'", OTHER),
        ("SELECT1", OTHER),
        ("WITH a AS (SELECT 1)", OTHER),
        ("", OTHER),
    ],
)
def test_operation_name(statement: str, name: str) -> None:
    assert operation_name(statement) == name


BOUNDED = OPERATIONS | {OTHER}
noise = st.sampled_from([" ", "\n", "\t", "(", "-- c\n", "/* x */", "/* (SELECT */"])
verbs = st.sampled_from(sorted(OPERATIONS - {"WITH"}))


@given(st.text())
def test_operation_name_is_always_bounded(statement: str) -> None:
    assert operation_name(statement) in BOUNDED


@given(st.lists(noise), verbs, st.text(), st.booleans())
def test_operation_name_finds_the_verb(prefix: list[str], verb: str, tail: str, low: bool) -> None:
    statement = "".join(prefix) + (verb.lower() if low else verb) + " " + tail
    assert operation_name(statement) == verb


@given(
    st.lists(
        st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True).filter(
            lambda name: name.upper() not in OPERATIONS
        ),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.text(), min_size=1, max_size=3),
    st.sampled_from(["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"]),
)
def test_operation_name_of_cte_is_the_main_verb(
    names: list[str], bodies: list[str], verb: str
) -> None:
    # CTE bodies hold arbitrary user text, quoted, beside decoy verbs.
    ctes = ", ".join(
        f"{name} AS (DELETE FROM t WHERE x = '{body.replace(chr(39), chr(39) * 2)}' RETURNING 1)"
        for name, body in zip(names, bodies, strict=False)
    )
    assert operation_name(f"WITH {ctes} {verb} 1") == verb


async def test_instrument_engine_measures_only_the_engines_it_is_given(
    make_handle: MakeHandle, db: Path, tmp_path: Path
) -> None:
    handle = make_handle(disabled_instrumentations="sqlalchemy")
    chosen = handle.instrument_engine(
        sa.create_engine(f"sqlite:///{db}", insertmanyvalues_page_size=2)
    )
    other_db = tmp_path / "other.db"
    sqlite3.connect(other_db).close()
    other = sa.create_engine(f"sqlite:///{other_db}")
    async_db = tmp_path / "async.db"
    create_items_table(async_db)
    chosen_async = handle.instrument_engine(
        create_async_engine(f"sqlite+aiosqlite:///{async_db}", insertmanyvalues_page_size=2)
    )
    with chosen.connect() as conn:
        sync_workload(conn)
        in_use = handle.render().decode()
    with other.connect() as conn:
        conn.execute(sa.text("SELECT 1")).all()
    async with chosen_async.connect() as conn:
        await async_workload(conn)
    text = handle.render().decode()
    assert operations(text, db_namespace="app.db") == SQLITE_FAILURES
    assert operations(text, db_namespace="async.db") == SQLITE_FAILURES
    assert operations(text, db_namespace="other.db") == {}
    assert pool_state(in_use, f"sqlite:///{db.name}")["used"] == 1
    assert pool_state(text, f"sqlite:///{db.name}")["used"] == 0
    handle.shutdown()
    assert "raw_connection" not in chosen.__dict__
    chosen.dispose()
    other.dispose()
    await chosen_async.dispose()


def test_instrument_engine_with_automatic_instrumentation_changes_nothing(
    make_handle: MakeHandle, db: Path
) -> None:
    handle = make_handle()
    engine = sa.create_engine(f"sqlite:///{db}", insertmanyvalues_page_size=2)
    assert handle.instrument_engine(engine) is engine
    with engine.connect() as conn:
        sync_workload(conn)
    assert operations(handle.render().decode()) == SQLITE_FAILURES  # once, not twice
    engine.dispose()
