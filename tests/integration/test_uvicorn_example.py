"""The shop example in a real uvicorn process: real requests, a real scrape, promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.exposition import series, value
from tests.integration.processes import free_port, server

pytestmark = pytest.mark.integration
COUNT = "http_server_request_duration_seconds_count"
# Semantic-conventions gauges named *.count keep their OTel names (the same series as through a
# Collector); promtool's naming lint flags exactly these, and nothing else may be flagged.
SEMCONV_COUNT_GAUGES = (
    "process_thread_count",
    "process_unix_file_descriptor_count",
    "db_client_connection_count",
)
COUNT_LINT = '{} non-histogram and non-summary metrics should not have "_count" suffix'


def test_shop_under_uvicorn(tmp_path: Path) -> None:
    port = free_port()
    env = {"SHOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}"}
    args = ["-m", "uvicorn", "examples.shop.app:app", "--port", str(port), "--no-access-log"]
    with server(args, port, env) as base, httpx.Client(base_url=base, timeout=10) as client:
        for i in range(1, 1001):  # 1,000 distinct ids: 100 users exist, 900 do not
            assert client.get(f"/users/{i}").status_code == (200 if i <= 100 else 404)
        for i in range(1, 11):  # now from the cache
            assert client.get(f"/users/{i}").json()["id"] == i
        for payment, total in [("card", 5), ("card", 60), ("paypal", 600), ("invoice", 2000)]:
            order = {"user_id": 1, "total": total, "payment_method": payment}
            assert client.post("/orders", json=order).status_code == 201
        assert client.post("/orders", json={"user_id": 1}).status_code == 422
        for _ in range(3):
            # uvicorn drops the connection after an unhandled exception: do not reuse it
            assert client.get("/error", headers={"Connection": "close"}).status_code == 500
        for i in range(20):
            assert client.get(f"/no/such/path/{i}").status_code == 404
        for _ in range(5):
            assert client.get("/healthz").status_code == 200  # excluded by the example
        text = client.get("/metrics").text

    def count(route: str | None, status: str, method: str = "GET") -> float:
        labels = {"http_request_method": method, "http_response_status_code": status}
        if route is not None:
            labels["http_route"] = route
        return value(text, COUNT, **labels)

    assert count("/users/{user_id}", "200") == 110
    assert count("/users/{user_id}", "404") == 900
    assert count("/orders", "201", "POST") == 4
    assert count("/payments/authorize", "200", "POST") == 4  # the orders' outbound calls
    assert count("/orders", "422", "POST") == 1
    assert count("/error", "500") == 3
    assert value(text, COUNT, http_route="/error", error_type="RuntimeError") == 3
    assert count(None, "404") == 920  # 900 unknown users + 20 unmatched paths
    assert value(text, COUNT) == 1010 + 5 + 4 + 3 + 20
    user_series = [s for s in series(text, COUNT) if s.get("http_route") == "/users/{user_id}"]
    assert len(user_series) == 2  # one per status code, whatever the ids
    assert len(series(text, COUNT)) == 7
    assert not any("/no/such" in line or "/users/1" in line for line in text.splitlines())
    assert value(text, "orders_created_total", payment_method="card") == 2
    assert value(text, "order_total_dollars_bucket", le="10.0") == 1
    assert value(text, "order_total_dollars_bucket", le="100.0") == 2
    assert value(text, "order_total_dollars_bucket", le="1000.0") == 3
    assert value(text, "order_total_dollars_count") == 4
    assert value(text, "target_info", service_name="shop") == 1

    # users through the cache: 1,000 first lookups miss, the 10 repeated ones hit
    assert value(text, "cache_requests_total", cache_name="local", cache_result="miss") == 1000
    assert value(text, "cache_requests_total", cache_name="local", cache_result="hit") == 10
    # orders in SQLite: the 4 orders (the start-up seed is not measured: not_measured())
    db = "db_client_operation_duration_seconds_count"
    assert value(text, db, db_system_name="sqlite", db_operation_name="INSERT") == 4
    assert value(text, db, db_operation_name="CREATE") == 0
    # SELECTs: 1,000 cache misses, and per order the user check plus the reload of its id
    # after commit
    assert value(text, db, db_namespace="shop.db", db_operation_name="SELECT") == 1000 + 4 * 2
    assert value(text, "db_client_connection_count", db_client_connection_state="used") == 0
    # the outbound call (requests), by server, never by path, once per order
    outbound = series(text, "http_client_request_duration_seconds_count")
    assert outbound == [
        {
            "http_request_method": "POST",
            "http_response_status_code": "200",
            "network_protocol_version": "1.1",
            "server_address": "127.0.0.1",
            "server_port": str(port),
        }
    ]
    assert value(text, "http_client_request_duration_seconds_count") == 4
    assert value(text, "process_memory_usage_bytes") > 10_000_000

    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by .ci/run (Debian package prometheus)"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    output = check.stdout + check.stderr
    allowed = {COUNT_LINT.format(name) for name in SEMCONV_COUNT_GAUGES}
    problems = [line for line in output.splitlines() if line and line not in allowed]
    assert check.returncode in (0, 3), output  # 3: lint findings only, no parse errors
    assert problems == [], output
