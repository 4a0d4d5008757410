"""The shop as a Flask app: orders in SQLite, users behind a cache, a payment call, business
metrics via OTel; `setup_metrics(app)` serves /metrics on the app.

Run: `python -m examples.flask_shop` (or `gunicorn -w 4 examples.flask_shop.app:app`; `gunicorn
-w 4 app:app` in this directory), then GET /metrics. The tables, their seed, the business
metrics, the user cache and the settings are examples/shop_common.py's, as for examples/shop/;
`SHOP_DATABASE_URL` defaults to SQLite `flask_shop.db` here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import requests
from flask import Flask, abort, request
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from otel_kit import setup_metrics

if __package__ != "examples.flask_shop":  # run in this directory (`app:app`) or examples/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from examples.shop_common import (
    PAYMENT_METHODS,
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

engine = create_engine(os.environ.get("SHOP_DATABASE_URL", "sqlite:///flask_shop.db"))
payments = requests.Session()

app = Flask("flask_shop")
setup_metrics(app, service_name="flask-shop", excluded_urls="^/healthz$")
seed(engine)  # each gunicorn worker imports the app: several at once find one seed
cache = user_cache()


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
    user = find_user(engine, cache, user_id)
    if user is None:
        abort(404)
    return user


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
