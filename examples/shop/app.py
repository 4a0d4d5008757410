"""The shop: orders in SQLite, users behind a cache, a payment call, business metrics via OTel.

Run: `python -m examples.shop` (or `uvicorn examples.shop.app:app`; `otel-kit run gunicorn -w 4
-k uvicorn.workers.UvicornWorker app:app` in this directory), then GET /metrics. Embedded
defaults: SQLite (`SHOP_DATABASE_URL`), an in-process user cache (set `SHOP_REDIS_URL` to use
Redis instead), and a payment provider that is this app's own `/payments/authorize` (set
`SHOP_PAYMENTS_URL` to call another service), called with requests from the worker thread
FastAPI runs the sync order endpoint in. The tables, their seed, the business metrics and the
user cache are examples/shop_common.py's, shared with the Flask shop.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import requests
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from otel_kit import setup_metrics

if __package__ != "examples.shop":  # run in this directory (`app:app`) or examples/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from examples.shop_common import (
    PAYMENTS_URL,
    Order,
    User,
    active_users,
    find_user,
    order_total,
    orders_created,
    seed,
    user_cache,
)

engine = create_engine(os.environ.get("SHOP_DATABASE_URL", "sqlite:///shop.db"))
payments = requests.Session()  # its connection pool is shared by the threadpool's threads


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    seed(engine)  # in each worker: several at once find one seed
    yield


app = FastAPI(title="shop", lifespan=lifespan)
setup_metrics(app, service_name="shop", excluded_urls="^/healthz$")
cache = user_cache()


class OrderIn(BaseModel):
    user_id: int = Field(ge=1)
    total: float = Field(gt=0)
    payment_method: Literal["card", "paypal", "invoice"]


@app.post("/orders", status_code=201)
def create_order(order: OrderIn, request: Request) -> dict[str, object]:
    with Session(engine) as session:
        if session.get(User, order.user_id) is None:
            raise HTTPException(404, "unknown user")
        # The outbound call (requests, measured in urllib3 underneath, once):
        # http_client_request_duration_seconds{server_address, ...}
        url = PAYMENTS_URL or f"{request.base_url}payments/authorize"
        authorization = payments.post(url, json={"amount": order.total}, timeout=5)
        if authorization.status_code != 200:
            raise HTTPException(502, "payment declined")
        row = Order(user_id=order.user_id, total=order.total, payment_method=order.payment_method)
        session.add(row)
        session.commit()
        order_id = row.id
    orders_created.add(1, {"payment_method": order.payment_method})
    order_total.record(order.total)
    return {"id": order_id, **order.model_dump()}


@app.get("/orders/{order_id}")
def get_order(order_id: int) -> dict[str, object]:
    with Session(engine) as session:
        row = session.get(Order, order_id)
        if row is None:
            raise HTTPException(404, "no such order")
        return {"id": row.id, "user_id": row.user_id, "total": row.total}


@app.post("/payments/authorize")
async def authorize_payment(payment: dict[str, float]) -> dict[str, object]:
    return {"authorized": True, "amount": payment.get("amount")}


@app.get("/users/{user_id}")
def get_user(user_id: int) -> dict[str, object]:
    user = find_user(engine, cache, user_id)
    if user is None:
        raise HTTPException(404, "no such user")
    return user


# response_model=None: early FastAPI 0.115 releases read a postponed `-> None` as a body model,
# which a 204 must not have.
@app.post("/sessions/{user_id}", status_code=204, response_model=None)
async def user_connected(user_id: int) -> None:
    active_users.add(1)


@app.delete("/sessions/{user_id}", status_code=204, response_model=None)
async def user_disconnected(user_id: int) -> None:
    active_users.add(-1)


@app.get("/error")
async def error() -> None:
    raise RuntimeError("simulated failure")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
