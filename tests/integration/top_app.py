"""An app with known behaviour for `otel-kit top` tests: `uvicorn tests.integration.top_app:app`.

/slow takes 0.3 s: every request lands in the (0.25, 0.5] bucket, so whatever the traffic,
p50 = 375 ms, p95 = 487.5 ms and p99 = 497.5 ms. /boom always answers 503; each /items/{item_id}
runs one SELECT and two cache lookups (one miss, one hit: 50 % hits); /proxy calls /slow.
"""

from __future__ import annotations

import asyncio
import os

import httpx
from fastapi import FastAPI, HTTPException
from sqlalchemy import create_engine, text

from otel_kit import cache_metrics, setup_metrics

SLOW_SECONDS = 0.3

app = FastAPI()
setup_metrics(app, service_name="top-test")
engine = create_engine("sqlite://")
client = httpx.Client(timeout=10)
_cache = {"present": "value"}


@cache_metrics("local")
def cache_get(key: str) -> str | None:
    return _cache.get(key)


@app.get("/slow")
async def slow() -> dict[str, str]:
    await asyncio.sleep(SLOW_SECONDS)
    return {"ok": "slow"}


@app.get("/fast")
async def fast() -> dict[str, str]:
    return {"ok": "fast"}


@app.get("/boom")
async def boom() -> None:
    raise HTTPException(503, "unavailable")


@app.get("/items/{item_id}")
def item(item_id: int) -> dict[str, object]:
    cache_get("absent")
    cache_get("present")
    with engine.connect() as connection:
        return {"id": item_id, "one": connection.execute(text("SELECT 1")).scalar()}


@app.get("/proxy")
def proxy() -> dict[str, object]:
    # A sync route runs in the thread pool, so calling this same server does not block it.
    port = os.environ["TOP_APP_PORT"]
    return {"status": client.get(f"http://127.0.0.1:{port}/slow").status_code}
