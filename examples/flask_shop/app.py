"""The shop as a Flask app: orders in SQLite, users behind a cache, a payment call, business
metrics via OTel; `setup_metrics(app)` serves /metrics on the app.

Run: `python -m examples.flask_shop` (or `gunicorn -w 4 examples.flask_shop.app:app`), then GET
/metrics. The same settings as examples/shop/: `SHOP_DATABASE_URL` (default SQLite
`flask_shop.db`), `SHOP_REDIS_URL` (Redis instead of the in-process user cache),
`SHOP_PAYMENTS_URL` (another payment service than this app's own `/payments/authorize`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import requests
from flask import Flask, abort, request
from opentelemetry import metrics
from sqlalchemy import ForeignKey, String, create_engine, exc, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from otel_kit import cache_metrics, not_measured, setup_metrics

DATABASE_URL = os.environ.get("SHOP_DATABASE_URL", "sqlite:///flask_shop.db")
REDIS_URL = os.environ.get("SHOP_REDIS_URL")
PAYMENTS_URL = os.environ.get("SHOP_PAYMENTS_URL")
PAYMENT_METHODS = ("card", "paypal", "invoice")
engine = create_engine(DATABASE_URL)
payments = requests.Session()


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


def seed() -> None:
    """Tables and 100 users; start-up work, kept out of the app's DB metrics. Each gunicorn
    worker imports the app at once: a worker that loses the race to another finds it done."""
    for attempt in range(5):
        try:
            _seed()
            return
        except (exc.OperationalError, exc.IntegrityError):  # "already exists", locked, taken
            if attempt == 4:
                raise
            time.sleep(0.2)


def _seed() -> None:
    with not_measured(), Session(engine) as session:
        Base.metadata.create_all(engine)
        if session.scalar(select(User.id).limit(1)) is None:
            tiers = ("free", "pro", "enterprise")
            session.add_all(User(id=i, name=f"user{i}", tier=tiers[i % 3]) for i in range(1, 101))
            session.commit()


app = Flask("flask_shop")
setup_metrics(app, service_name="flask-shop", excluded_urls="^/healthz$")
seed()

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


@app.post("/orders")
def create_order() -> tuple[dict[str, object], int]:
    body = request.get_json(silent=True) or {}
    user_id, total, method = body.get("user_id"), body.get("total"), body.get("payment_method")
    if not isinstance(user_id, int) or user_id < 1 or method not in PAYMENT_METHODS:
        abort(422)
    if not isinstance(total, (int, float)) or total <= 0:
        abort(422)
    with Session(engine) as session:
        if session.get(User, user_id) is None:
            abort(404)
        url = PAYMENTS_URL or f"{request.host_url}payments/authorize"
        authorization = payments.post(url, json={"amount": total}, timeout=5)
        if authorization.status_code != 200:
            abort(502)
        row = Order(user_id=user_id, total=total, payment_method=method)
        session.add(row)
        session.commit()
        order_id = row.id
    orders_created.add(1, {"payment_method": method})
    order_total.record(total)
    return {"id": order_id, "user_id": user_id, "total": total, "payment_method": method}, 201


@app.get("/orders/<int:order_id>")
def get_order(order_id: int) -> dict[str, object]:
    with Session(engine) as session:
        row = session.get(Order, order_id)
        if row is None:
            abort(404)
        return {"id": row.id, "user_id": row.user_id, "total": row.total}


@app.post("/payments/authorize")
def authorize_payment() -> dict[str, object]:
    return {"authorized": True, "amount": (request.get_json(silent=True) or {}).get("amount")}


@app.get("/users/<int:user_id>")
def get_user(user_id: int) -> dict[str, object]:
    cached = cache.get(f"user:{user_id}")
    if cached is not None:
        return dict(json.loads(cached))
    with Session(engine) as session:
        user = session.get(User, user_id)
        if user is None:
            abort(404)
        value: dict[str, object] = {"id": user.id, "name": user.name, "tier": user.tier}
    cache.set(f"user:{user_id}", json.dumps(value))
    return value


@app.post("/sessions/<int:user_id>")
def user_connected(user_id: int) -> tuple[str, int]:
    active_users.add(1)
    return "", 204


@app.delete("/sessions/<int:user_id>")
def user_disconnected(user_id: int) -> tuple[str, int]:
    active_users.add(-1)
    return "", 204


@app.get("/error")
def error() -> str:
    raise RuntimeError("simulated failure")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
