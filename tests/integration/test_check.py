"""`otel-kit check` on real sockets: URLs fetched like Prometheus scrapes from a real HTTP server
on loopback, unusable and unreachable ones; otel-kit's own exposition on its metrics port, and
the example shop's under uvicorn."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from sqlalchemy import create_engine, text

from otel_kit import record_cache_lookup, setup_metrics
from otel_kit.cli._exposition import PROMETHEUS_ACCEPT
from tests.check_command import DATA, findings, run
from tests.integration.processes import free_port, http_server, server

pytestmark = pytest.mark.integration


# --- URLs: a real HTTP server on loopback ---------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """/text (Prometheus text), /om (OpenMetrics), /html, /missing (404), /slow (1 s)."""

    accepts: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.accepts.append(self.headers.get("Accept", ""))
        if self.path == "/slow":
            time.sleep(1)
        body, content_type, status = {
            "/text": ((DATA / "label-looks-like-id.prom").read_text(), "text/plain", 200),
            "/om": ((DATA / "clean.om").read_text(), "application/openmetrics-text", 200),
            "/html": ("<html>sign in</html>", "text/html", 200),
        }.get(self.path, ("not found", "text/plain", 404))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type + "; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# promtool flags these names (its exit status 3); check reports that as info, nothing more.
SEMCONV_COUNT_GAUGES = [
    "db_client_connection_count", "process_thread_count", "process_unix_file_descriptor_count",
]  # fmt: skip


def promtool_infos(document: dict[str, Any]) -> list[str]:
    """The families of a clean otel-kit exposition's findings, all `promtool-lint` infos."""
    assert {(f["severity"], f["rule"]) for f in document["findings"]} == {("info", "promtool-lint")}
    return sorted(f["family"] for f in document["findings"])


@pytest.fixture
def web() -> Iterator[str]:
    with http_server(Handler) as url:
        yield url


def test_urls_are_fetched_like_prometheus_scrapes(web: str) -> None:
    Handler.accepts.clear()
    assert [f[1] for f in findings(f"{web}/text")] == ["label-looks-like-id"]
    document = json.loads(run(f"{web}/om", "--json").output)
    assert (document["format"], document["findings"]) == ("openmetrics", [])
    assert Handler.accepts == [PROMETHEUS_ACCEPT, PROMETHEUS_ACCEPT]


@pytest.mark.parametrize(
    ("path", "options", "message"),
    [
        ("/missing", [], "{url} answered HTTP 404, expected 200"),
        ("/html", [], "{url} is not valid Prometheus text exposition: invalid metric name"),
        ("/slow", ["--timeout", "0.3"], "{url}: no complete answer within --timeout 0.3 s"),
    ],
)
def test_unusable_urls_exit_2(web: str, path: str, options: list[str], message: str) -> None:
    url = web + path
    result = run(url, *options)
    assert result.exit_code == 2
    assert result.output.startswith("otel-kit check: " + message.format(url=url)), result.output


def test_unreachable_url_exits_2() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    result = run(url)
    assert result.exit_code == 2
    assert result.output.startswith(f"otel-kit check: cannot reach {url}: ")
    assert "Traceback" not in result.output


# --- real outputs: otel-kit itself, the shop ----------------------------------------------


@pytest.mark.usefixtures("global_metrics")  # record_cache_lookup() finds the global handle
async def test_otel_kits_own_exposition_is_clean() -> None:
    app = FastAPI()

    # async: no worker threads left behind to disturb other tests' thread counts
    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        record_cache_lookup("local", hit=item_id % 2 == 0)
        if item_id > 900:
            raise HTTPException(503)
        with engine.connect() as connection:
            return {"id": connection.execute(text("SELECT :id"), {"id": item_id}).scalar_one()}

    handle = setup_metrics(app, prometheus_host="127.0.0.1", prometheus_port=0)
    engine = create_engine("sqlite://")
    url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        for item_id in [*range(1, 301), 901, 902]:  # 300 distinct ids: one route template
            await client.get(f"/items/{item_id}")
        for i in range(20):
            await client.get(f"/no/such/path/{i}")
    httpx.get(url, timeout=10)  # an outbound call: http_client_request_duration_seconds
    result = run(url, "--json", "--fail-on", "warning")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert promtool_infos(document) == SEMCONV_COUNT_GAUGES
    families = {f["name"]: f for f in document["families"]}
    assert families["http_server_request_duration_seconds"]["labels"] == [
        {"name": "http_response_status_code", "values": 3},
        {"name": "http_request_method", "values": 1},
        {"name": "http_route", "values": 1},
        {"name": "network_protocol_version", "values": 1},
        {"name": "otel_scope_name", "values": 1},
        {"name": "otel_scope_version", "values": 1},
        {"name": "url_scheme", "values": 1},
        {"name": "error_type", "values": 1},
    ]
    for name in (
        "cache_requests_total", "db_client_operation_duration_seconds",
        "http_client_request_duration_seconds", "process_thread_count", "target_info",
    ):  # fmt: skip
        assert families[name]["series"] > 0, name


def test_the_example_shop_is_clean(tmp_path: Path) -> None:
    port = free_port()
    env = {"SHOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}"}
    args = ["-m", "uvicorn", "examples.shop.app:app", "--port", str(port), "--no-access-log"]
    with server(args, port, env) as base, httpx.Client(base_url=base, timeout=10) as client:
        for i in range(1, 301):  # 100 users exist, 200 do not: ids never become labels
            client.get(f"/users/{i}")
        order = {"user_id": 1, "total": 60, "payment_method": "card"}
        assert client.post("/orders", json=order).status_code == 201
        assert client.get("/error", headers={"Connection": "close"}).status_code == 500
        for i in range(20):
            client.get(f"/no/such/path/{i}")
        result = run(f"{base}/metrics", "--json", "--fail-on", "warning")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["format"] == "openmetrics"  # negotiated as Prometheus does
    assert promtool_infos(document) == SEMCONV_COUNT_GAUGES
    names = {f["name"] for f in document["families"]}
    # the semantic-conventions `*_count` gauges are there, and only infos
    assert {"db_client_connection_count", "process_thread_count"} <= names
    assert "process_unix_file_descriptor_count" in names
