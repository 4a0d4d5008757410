"""HTTP server metrics on the separate metrics port: a real socket on loopback instead of the
app's own /metrics (in-process requests to the app, httpx ASGI transport)."""

from __future__ import annotations

import httpx
import pytest

from tests.exposition import value
from tests.handles import MakeHandle
from tests.http_app import client, make_app

pytestmark = pytest.mark.integration
COUNT = "http_server_request_duration_seconds_count"


async def test_separate_metrics_port(make_handle: MakeHandle) -> None:
    app = make_app()
    handle = make_handle(app, prometheus_host="127.0.0.1", prometheus_port=0)
    assert handle.prometheus_port
    async with client(app) as c:
        await c.get("/items/1")
        assert (await c.get("/metrics")).status_code == 404  # not on the app
    async with httpx.AsyncClient() as direct:
        response = await direct.get(f"http://127.0.0.1:{handle.prometheus_port}/metrics")
    assert value(response.text, COUNT, http_route="/items/{item_id}") == 1
