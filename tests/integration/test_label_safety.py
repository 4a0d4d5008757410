"""What a request carries never reaches the exposition: one marker string in every URL path,
query string, header value, cookie, SQL statement, Redis key and value, outbound URL and
exception message, through every integration at once (real SQLite, redis-server, HTTP server);
the scrape (Prometheus text and OpenMetrics, every label and target_info) must not contain it."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import httpx
import pytest
import redis
import sqlalchemy as sa
from fastapi import FastAPI, Request

from tests.exposition import value
from tests.handles import MakeHandle
from tests.integration.processes import http_server

pytestmark = pytest.mark.integration

MARK = "zq7marker"
COUNT = "http_server_request_duration_seconds_count"
DB_COUNT = "db_client_operation_duration_seconds_count"


class Peer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404 if MARK in self.path else 200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_no_request_content_in_any_label(make_handle: MakeHandle, redis_server: int) -> None:
    engine = sa.create_engine("sqlite://")
    cache = redis.Redis(port=redis_server, db=7)
    app = FastAPI()
    make_handle(app, service_name="shop")

    with http_server(Peer) as peer:

        @app.get("/things/{name}")
        def thing(name: str, request: Request) -> dict[str, int]:
            with engine.connect() as conn:
                conn.execute(sa.text(f"SELECT '{MARK}-literal' AS {MARK}_column"))
            cache.set(f"{MARK}-key", MARK)
            cache.get(f"{MARK}-key")
            cache.get(f"{MARK}-missing")
            outbound = httpx.get(
                f"{peer}/{MARK}-outbound/{name}?{MARK}=1", headers={"X-Marker": MARK}
            )
            return {"outbound": outbound.status_code}

        @app.get("/boom")
        def boom() -> None:
            raise ValueError(f"{MARK} in an exception message")

        headers = {"X-Marker": MARK, "User-Agent": MARK, "Cookie": f"session={MARK}"}
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            response = await c.get(f"/things/{MARK}-path?{MARK}-query={MARK}", headers=headers)
            assert response.json() == {"outbound": 404}
            assert (await c.get(f"/{MARK}-unmatched?q={MARK}", headers=headers)).status_code == 404
            assert (await c.get(f"/boom?{MARK}=1", headers=headers)).status_code == 500
            text = (await c.get("/metrics")).text
            openmetrics = await c.get(
                "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            )
    cache.close()
    engine.dispose()
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    # What was measured is there (the test can fail) ...
    assert value(text, COUNT, http_route="/things/{name}", http_response_status_code="200") == 1
    assert value(text, COUNT, http_response_status_code="404") == 1
    assert value(text, COUNT, http_route="/boom", error_type="ValueError") == 1
    assert value(text, DB_COUNT, db_system_name="sqlite", db_operation_name="SELECT") == 1
    assert value(text, DB_COUNT, db_system_name="redis", db_operation_name="GET") == 2
    assert value(text, "cache_requests_total", cache_name="redis", cache_result="miss") == 1
    assert (
        value(
            text,
            "http_client_request_duration_seconds_count",
            server_address="127.0.0.1",
            http_response_status_code="404",
        )
        == 1
    )
    assert "target_info{" in text and "target_info{" in openmetrics.text
    assert 'service_name="shop"' in text
    # ... and the marker is nowhere.
    assert MARK not in text.lower()
    assert MARK not in openmetrics.text.lower()
