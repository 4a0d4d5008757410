"""The SQLAlchemy metrics tests' workload, for SQLite (tests/unit/test_sqlalchemy_sqlite.py)
and PostgreSQL (tests/integration/test_sqlalchemy_postgres.py): a table, the statements one run
makes and what they record, and readers of the exposition."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.exposition import samples, value

DURATION = "db_client_operation_duration_seconds"
COUNT = "db_client_connection_count"
MAX = "db_client_connection_max"
PENDING = "db_client_connection_pending_requests"
TIMEOUTS = "db_client_connection_timeouts_total"
WAIT = "db_client_connection_wait_time_seconds"

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(50)),
)
missing = sa.Table("no_such_table", sa.MetaData(), sa.Column("id", sa.Integer))

# (operation, error.type) -> observations one workload run produces, besides its two failures
WORKLOAD = {
    ("SELECT", None): 4,
    ("INSERT", None): 4,  # 3 single rows + 1 executemany of 5 rows
    ("UPDATE", None): 2,
    ("DELETE", None): 1,
    ("COMMIT", None): 1,
    ("ROLLBACK", None): 2,  # after each failed statement; none at close (nothing left open)
}


def sync_workload(conn: Connection) -> None:
    """The statements of WORKLOAD (plus one failing SELECT on a missing table)."""
    for i in range(3):
        conn.execute(items.insert().values(id=i, name=f"item {i}"))
    rows = [{"id": i, "name": f"bulk {i}"} for i in range(100, 105)]
    # RETURNING + insertmanyvalues_page_size=2 sends the 5 rows in 3 cursor batches.
    assert len(conn.execute(items.insert().returning(items.c.id), rows).all()) == 5
    for i in range(4):
        conn.execute(sa.select(items).where(items.c.id == i)).all()
    for i in range(2):
        conn.execute(items.update().where(items.c.id == i).values(name="changed"))
    conn.execute(items.delete().where(items.c.id == 2))
    conn.commit()
    with pytest.raises(sa.exc.IntegrityError):
        conn.execute(items.insert().values(id=1, name="duplicate"))
    conn.rollback()
    with pytest.raises(sa.exc.DBAPIError):
        conn.execute(sa.select(missing))
    conn.rollback()


async def async_workload(conn: AsyncConnection) -> None:
    await conn.run_sync(lambda sync: sync_workload(sync))


def operations(text: str, before: str = "", **labels: str) -> dict[Any, float]:
    """(operation, error.type) -> observations between `before` and `text`, where `labels`."""
    out: dict[Any, float] = {}
    for sign, exposition in ((1, text), (-1, before)):
        for (name, found), count in samples(exposition).items():
            attributes = dict(found)
            if name == DURATION + "_count" and labels.items() <= attributes.items():
                key = (attributes["db_operation_name"], attributes.get("error_type"))
                out[key] = out.get(key, 0) + sign * count
    return {key: count for key, count in out.items() if count}


def expected(unique_violation: str, missing_table: str) -> dict[Any, float]:
    """WORKLOAD and its failures: the driver's exception classes (`error.type`) for the
    duplicate key and the missing table."""
    return {**WORKLOAD, ("INSERT", unique_violation): 1, ("SELECT", missing_table): 1}


def status_codes(text: str) -> dict[Any, float]:
    """(operation, error.type, db.response.status_code) -> observations, of failed operations."""
    out: dict[Any, float] = {}
    for (name, found), count in samples(text).items():
        attributes = dict(found)
        if name == DURATION + "_count" and "error_type" in attributes:
            key = (
                attributes["db_operation_name"],
                attributes["error_type"],
                attributes.get("db_response_status_code"),
            )
            out[key] = out.get(key, 0) + count
    return out


def pool_state(text: str, pool: str) -> dict[str, float]:
    return {
        "idle": value(
            text, COUNT, db_client_connection_pool_name=pool, db_client_connection_state="idle"
        ),
        "used": value(
            text, COUNT, db_client_connection_pool_name=pool, db_client_connection_state="used"
        ),
        "pending": value(text, PENDING, db_client_connection_pool_name=pool),
        "timeouts": value(text, TIMEOUTS, db_client_connection_pool_name=pool),
        "waits": value(text, WAIT + "_count", db_client_connection_pool_name=pool),
    }
