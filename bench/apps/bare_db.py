"""Baseline for the realistic route: one SQLite query (SQLAlchemy) and one cache lookup."""

import os
import tempfile

from fastapi import FastAPI
from sqlalchemy import create_engine, text

DB = os.path.join(tempfile.mkdtemp(prefix="bench-db-"), "items.db")
engine = create_engine(f"sqlite:///{DB}")
with engine.begin() as conn:
    conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
    conn.execute(
        text("INSERT INTO items VALUES (:id, :name)"),
        [{"id": i, "name": f"item {i}"} for i in range(100)],
    )

app = FastAPI()
_cache: dict[str, str] = {}


def cache_get(key: str) -> str | None:
    return _cache.get(key)


@app.get("/items/{item_id}")
def read_item(item_id: int) -> dict[str, object]:
    cached = cache_get(f"tier:{item_id}")  # always a miss: the lookup is what is measured
    with engine.connect() as conn:
        name = conn.execute(text("SELECT name FROM items WHERE id = :id"), {"id": item_id}).scalar()
    return {"id": item_id, "name": name, "cached": cached}
