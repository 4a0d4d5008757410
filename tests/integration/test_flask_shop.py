"""The Flask shop (examples/flask_shop/): `python -m examples.flask_shop` as the README says,
and under `otel-kit run gunicorn -w 2` (users cached in the real Redis) scraped by a real
Prometheus 3 with the committed rules: exact counts per route template across both workers,
and every panel and variable of every committed dashboard returns data."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import httpx
import pytest
import redis

from tests import go_tools
from tests.exposition import value
from tests.integration.otel_kit_run import RUN_CLI, VENV_BIN
from tests.integration.otelcol import shipped_prometheus_config
from tests.integration.processes import free_port, server
from tests.integration.prometheus_server import prometheus, query, wait_for
from tests.integration.test_prometheus_rules import DASHBOARDS, RULE_FILES, substitute, values

pytestmark = pytest.mark.integration

COUNT = "http_server_request_duration_seconds_count"
CYCLES = 30  # per cycle: 5 user lookups (1 miss, 4 hits), 1 error, 1 order (+ its payment call)
ROUTES = {
    ("/users/<int:user_id>", "200"): CYCLES * 5,
    ("/error", "500"): CYCLES,
    ("/orders", "201"): CYCLES,
    ("/payments/authorize", "200"): CYCLES,
}


def drive(client: httpx.Client) -> None:
    close = {"Connection": "close"}  # a fresh connection each: the requests spread over workers
    for cycle in range(CYCLES):
        user = cycle + 1
        for _ in range(5):  # the first misses the cache
            assert client.get(f"/users/{user}", headers=close).status_code == 200
        assert client.get("/error", headers=close).status_code == 500
        order = {"user_id": user, "total": 10 + cycle, "payment_method": "card"}
        assert client.post("/orders", json=order, headers=close).status_code == 201


def test_python_m_example(tmp_path: Path) -> None:
    port = free_port()
    env = {"SHOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}"}
    args = ["-m", "examples.flask_shop", "--port", str(port)]
    with server(args, port, env) as base, httpx.Client(base_url=base, timeout=10) as client:
        drive(client)
        assert client.post("/orders", json={"user_id": 1}).status_code == 422
        assert client.get("/healthz").status_code == 200  # excluded
        for i in range(20):
            assert client.get(f"/no/such/path/{i}").status_code == 404
        text = client.get("/metrics").text
    for (route, status), expected in ROUTES.items():
        assert value(text, COUNT, http_route=route, http_response_status_code=status) == expected
    assert value(text, COUNT, http_route="/orders", http_response_status_code="422") == 1
    assert value(text, COUNT, http_response_status_code="404") == 20
    assert value(text, COUNT) == sum(ROUTES.values()) + 1 + 20
    assert value(text, "cache_requests_total", cache_name="local", cache_result="hit") == (
        CYCLES * 4
    )
    assert value(text, "orders_created_total", payment_method="card") == CYCLES
    assert value(
        text, "db_client_operation_duration_seconds_count", db_operation_name="INSERT"
    ) == (CYCLES)
    assert "/no/such" not in text


def test_gunicorn_two_workers_dashboards_return_data(tmp_path: Path, redis_server: int) -> None:
    redis.Redis(port=redis_server, db=6).flushdb()
    port = free_port()
    env = {
        "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
        "SHOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}",
        "SHOP_REDIS_URL": f"redis://127.0.0.1:{redis_server}/6",
    }
    app = "examples.flask_shop.app:app"
    gunicorn = ["gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "--log-level", "critical", app]
    args = [str(RUN_CLI), "run", *gunicorn]
    config = shipped_prometheus_config(RULE_FILES, direct={"shop": f"127.0.0.1:{port}"})
    (tmp_path / "prometheus").mkdir()
    binary = go_tools.prometheus3()
    with (
        server(args, port, env) as base,
        prometheus(config, tmp_path / "prometheus", binary, []) as prom,
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        total = 'sum(http_server_request_duration_seconds_count{job="shop"})'
        # Warm-up: every series exists before the measured traffic (a rate needs two samples).
        assert client.get("/users/100", headers={"Connection": "close"}).status_code == 200
        order = {"user_id": 100, "total": 5, "payment_method": "card"}
        assert client.post("/orders", json=order).status_code == 201  # and its payment call
        wait_for(prom, f"{total} == 3", timeout=60)
        drive(client)
        wait_for(prom, f"{total} == {3 + sum(ROUTES.values())}", timeout=60)
        text = httpx.get(base + "/metrics", timeout=10).text
        per_route = {
            (s["metric"]["http_route"], s["metric"]["http_response_status_code"]): float(
                s["value"][1]
            )
            for s in query(prom, 'http_server_request_duration_seconds_count{job="shop"}')
        }
        workers = query(prom, 'count(process_memory_usage_bytes{job="shop"})')
        (info,) = query(prom, 'target_info{job="shop"}')
        instance = info["metric"]["instance"]
        empty: list[str] = []
        for path in DASHBOARDS:
            dashboard = json.loads(path.read_text())
            for variable in dashboard["templating"]["list"]:
                if variable["type"] == "query":
                    selector, label = variable["query"][len("label_values(") : -1].rsplit(", ", 1)
                    found = httpx.get(
                        f"{prom}/api/v1/label/{label}/values",
                        params={"match[]": substitute(selector, instance)},
                        timeout=10,
                    ).json()["data"]
                    if not found:
                        empty.append(f"{path.name} variable {label}")
            for panel in dashboard["panels"]:
                for target in panel["targets"]:
                    result = query(prom, substitute(target["expr"], instance))
                    if not [v for v in values(result) if math.isfinite(v)]:
                        empty.append(f"{path.name} / {panel['title']}: {target['expr']}")
    expected = dict(ROUTES)
    for warm_up in (
        ("/users/<int:user_id>", "200"),
        ("/orders", "201"),
        ("/payments/authorize", "200"),
    ):
        expected[warm_up] += 1
    assert per_route == expected
    for (route, status), count in expected.items():
        assert value(text, COUNT, http_route=route, http_response_status_code=status) == count
    assert value(text, "cache_requests_total", cache_name="redis", cache_result="hit") == CYCLES * 4
    assert value(text, "cache_requests_total", cache_name="redis", cache_result="miss") == (
        CYCLES + 1
    )
    assert values(workers) == [3]  # two workers and the arbiter (otel-kit run sets up each)
    assert not empty, "\n".join(empty)
