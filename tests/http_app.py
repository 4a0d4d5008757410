"""The FastAPI app of the HTTP server metrics tests, and an in-process client for it (httpx
ASGI transport)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import StreamingResponse


def make_app() -> FastAPI:
    app = FastAPI()
    api = APIRouter(prefix="/api")
    v1 = APIRouter(prefix="/v1")

    @v1.get("/things/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    @api.get("/users/{user_id}")
    async def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    api.include_router(v1)
    app.include_router(api)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.post("/items")
    async def create_item() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("broken")

    @app.get("/unavailable")
    async def unavailable() -> None:
        raise HTTPException(503)

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(404)

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(0.1)
        return {"ok": "yes"}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                await asyncio.sleep(0.1)
                yield b"chunk\n"

        return StreamingResponse(chunks())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"ok": "yes"}

    sub = FastAPI()

    @sub.get("/hello/{name}")
    async def hello(name: str) -> dict[str, str]:
        return {"name": name}

    app.mount("/sub", sub)
    return app


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")
