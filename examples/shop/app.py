"""The shop: orders in SQLite, users behind a cache, a payment call, business metrics via OTel.

Run: `python -m examples.shop` (or `uvicorn examples.shop.app:app`), then GET /metrics.
Embedded defaults: SQLite (`SHOP_DATABASE_URL`), an in-process user cache (set `SHOP_REDIS_URL`
to use Redis instead), and a payment provider that is this app's own `/payments/authorize`
(set `SHOP_PAYMENTS_URL` to call another service), called with requests from the worker thread
FastAPI runs the sync order endpoint in.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import requests
from fastapi import FastAPI, HTTPException, Request
from opentelemetry import metrics
from pydantic import BaseModel, Field
from sqlalchemy import ForeignKey, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from otel_kit import cache_metrics, setup_metrics

DATABASE_URL = os.environ.get("SHOP_DATABASE_URL", "sqlite:///shop.db")
REDIS_URL = os.environ.get("SHOP_REDIS_URL")
PAYMENTS_URL = os.environ.get("SHOP_PAYMENTS_URL")
engine = create_engine(DATABASE_URL)
payments = requests.Session()  # its connection pool is shared by the threadpool's threads


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    tier: Mapped[str] = mapped_column(String(20))


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    total: Mapped[float]
    payment_method: Mapped[str] = mapped_column(String(20))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        if session.scalar(select(User.id).limit(1)) is None:
            tiers = ("free", "pro", "enterprise")
            session.add_all(User(id=i, name=f"user{i}", tier=tiers[i % 3]) for i in range(1, 101))
            session.commit()
    yield


app = FastAPI(title="shop", lifespan=lifespan)
setup_metrics(app, service_name="shop", excluded_urls="^/healthz$")

# Business metrics: the standard OTel API; they appear on the same /metrics.
meter = metrics.get_meter("shop")
orders_created = meter.create_counter(
    "orders.created", unit="{order}", description="Total orders created"
)
order_total = meter.create_histogram(
    "order.total",
    unit="dollars",
    description="Order total in dollars",
    explicit_bucket_boundaries_advisory=[10, 25, 50, 100, 250, 500, 1000],
)
active_users = meter.create_up_down_counter(
    "active.users", unit="{user}", description="Currently active users"
)


class LocalCache:
    """An in-process cache; its lookups are counted as cache_requests_total{cache_name="local"}."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    @cache_metrics("local")
    def get(self, key: str) -> str | None:
        return self._values.get(key)

    def set(self, key: str, value: str) -> None:
        self._values[key] = value


# With Redis, the Redis integration counts hits and misses itself (cache_name="redis").
cache: Any = LocalCache()
if REDIS_URL:
    import redis

    cache = redis.Redis.from_url(REDIS_URL, decode_responses=True)


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
    cached = cache.get(f"user:{user_id}")
    if cached is not None:
        return dict(json.loads(cached))
    with Session(engine) as session:
        user = session.get(User, user_id)
        if user is None:
            raise HTTPException(404, "no such user")
        value: dict[str, object] = {"id": user.id, "name": user.name, "tier": user.tier}
    cache.set(f"user:{user_id}", json.dumps(value))
    return value


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
