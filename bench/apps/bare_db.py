"""Baseline for the realistic route: one SQLite query (SQLAlchemy) and one cache lookup."""

import os
import tempfile
from collections.abc import Callable

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

_cache: dict[str, str] = {}


def cache_get(key: str) -> str | None:
    return _cache.get(key)


def create_app(lookup: Callable[[str], str | None]) -> FastAPI:
    """The realistic route with `lookup` as its cache (otel_kit_db.py passes a measured one)."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    def read_item(item_id: int) -> dict[str, object]:
        cached = lookup(f"tier:{item_id}")  # always a miss: the lookup is what is measured
        with engine.connect() as conn:
            statement = text("SELECT name FROM items WHERE id = :id")
            name = conn.execute(statement, {"id": item_id}).scalar()
        return {"id": item_id, "name": name, "cached": cached}

    return app


app = create_app(cache_get)
