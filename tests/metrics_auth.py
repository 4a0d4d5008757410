"""The protected metrics endpoint's tests, unit and integration: credentials, an app, clients
and the refusal every wrong or missing credential gets."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from fastapi import FastAPI

TOKEN = "s3cret-T0ken_value.~+/="
USER, PASSWORD = "prometheus", "pa:ss wörd"  # a colon and non-ASCII in the password are allowed
CHALLENGE_BEARER = 'Bearer realm="metrics"'
CHALLENGE_BASIC = 'Basic realm="metrics", charset="UTF-8"'


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")


def basic(user: str, password: str) -> dict[str, str]:
    pair = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response: httpx.Response, *challenges: str) -> None:
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == list(challenges)
    assert response.text == "401 Unauthorized: this metrics endpoint needs credentials\n"
