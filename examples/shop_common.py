"""What both shops share (examples/shop/: FastAPI, examples/flask_shop/: Flask): the settings,
the tables and their seed, the business metrics and the user cache.

Settings: `SHOP_REDIS_URL` (Redis instead of the in-process user cache), `SHOP_PAYMENTS_URL`
(another payment service than the app's own `/payments/authorize`); each app reads
`SHOP_DATABASE_URL` with its own default SQLite file.
"""

from __future__ import annotations

import json
import os
from typing import Any

from opentelemetry import metrics
from sqlalchemy import Engine, ForeignKey, String, exc, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.schema import CreateTable

from otel_kit import cache_metrics, not_measured

REDIS_URL = os.environ.get("SHOP_REDIS_URL")
PAYMENTS_URL = os.environ.get("SHOP_PAYMENTS_URL")
PAYMENT_METHODS = ("card", "paypal", "invoice")
TIERS = ("free", "pro", "enterprise")


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


def seed(engine: Engine) -> None:
    """The tables and users 1 to 100, once however many workers start on a fresh database at
    the same time (each gunicorn worker seeds): the tables are created if they do not exist,
    and the users, with fixed ids, in one transaction; a worker whose insert conflicts with
    another's finds them there. Start-up work, kept out of the app's DB metrics."""
    with not_measured():
        with engine.begin() as connection:
            for table in Base.metadata.sorted_tables:
                connection.execute(CreateTable(table, if_not_exists=True))
        users = [{"id": i, "name": f"user{i}", "tier": TIERS[i % 3]} for i in range(1, 101)]
        try:
            with engine.begin() as connection:
                if connection.scalar(select(User.id).limit(1)) is None:
                    connection.execute(insert(User), users)
        except exc.IntegrityError:  # another worker's transaction inserted them first
            pass


# Business metrics: the standard OTel API; they appear on the same /metrics. Meters taken before
# `setup_metrics()` (at import) record into its provider once it is set.
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


def user_cache() -> Any:
    """Redis at `SHOP_REDIS_URL` (the Redis integration counts its hits and misses,
    cache_name="redis"), else a `LocalCache`."""
    if REDIS_URL:
        import redis

        return redis.Redis.from_url(REDIS_URL, decode_responses=True)
    return LocalCache()


def find_user(engine: Engine, cache: Any, user_id: int) -> dict[str, object] | None:
    """User `user_id` from `cache`, else from the database (then cached); None if unknown."""
    cached = cache.get(f"user:{user_id}")
    if cached is not None:
        return dict(json.loads(cached))
    with Session(engine) as session:
        user = session.get(User, user_id)
        if user is None:
            return None
        value: dict[str, object] = {"id": user.id, "name": user.name, "tier": user.tier}
    cache.set(f"user:{user_id}", json.dumps(value))
    return value
