"""A real Flask app (tests/integration/apps/flask_plain.py) in real gunicorn sync workers on
loopback, real HTTP requests: `setup_metrics(app)` in the app's module, and `otel-kit run
gunicorn` on the app without a line of otel-kit, several workers in one scrape."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from tests.exposition import series, value
from tests.integration.otel_kit_run import copy_apps, otel_kit_run
from tests.integration.processes import free_port, server

pytestmark = pytest.mark.integration

COUNT = "http_server_request_duration_seconds_count"
BUCKET = "http_server_request_duration_seconds_bucket"
ITEMS = "/items/<int:item_id>"


def gunicorn(port: int, app: str, *args: str) -> list[str]:
    """Sync workers (gunicorn's default worker class)."""
    return ["gunicorn", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", *args, app]


def test_setup_metrics_in_the_app_module_under_gunicorn(tmp_path: Path) -> None:
    port = free_port()
    cwd = copy_apps(tmp_path / "app")
    # One sync worker: it answers one request at a time, so a scrape comes after the previous
    # request's response was closed (and recorded) by the worker.
    args = ["-m", *gunicorn(port, "flask_setup:app", "-w", "1")]
    with server(args, port, cwd=cwd) as base, httpx.Client(base_url=base, timeout=10) as client:
        for i in range(5):
            assert client.get(f"/items/{i}").status_code == 200
        for name in ("ann", "bob"):
            assert client.get(f"/api/v1/users/{name}").status_code == 200
        assert client.post("/api/v1/admin/reports/3").status_code == 201
        assert client.request("PURGE", "/cache/k").status_code == 200
        assert client.get("/boom").status_code == 500
        assert client.get("/healthz").status_code == 200  # excluded
        download = client.get("/download")
        assert download.content == (cwd / "flask_plain.py").read_bytes()
        with client.stream("GET", "/stream") as stream:
            assert b"".join(stream.iter_bytes()) == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n"
        rng = random.Random(18)
        for _ in range(300):
            assert client.get(f"/{rng.getrandbits(64):x}/{rng.getrandbits(32)}").is_error
        text = client.get("/metrics").text

    def count(route: str | None, method: str = "GET", status: str = "200") -> float:
        labels = {"http_request_method": method, "http_response_status_code": status}
        return value(text, COUNT, **labels, **({} if route is None else {"http_route": route}))

    assert count(ITEMS) == 5
    assert count("/api/v1/users/<user_id>") == 2
    assert count("/api/v1/admin/reports/<int:report_id>", "POST", "201") == 1
    assert count("/cache/<key>", "_OTHER") == 1
    assert count("/stream") == 1
    assert count("/download") == 1
    assert value(text, BUCKET, http_route="/stream", le="0.25") == 0  # timed until closed
    assert value(text, COUNT, http_route="/boom", error_type="ValueError") == 1
    assert count(None, status="404") == 300
    assert value(text, COUNT) == 5 + 2 + 1 + 1 + 1 + 1 + 1 + 300
    assert {s.get("http_route") for s in series(text, COUNT)} == {
        ITEMS,
        "/api/v1/users/<user_id>",
        "/api/v1/admin/reports/<int:report_id>",
        "/cache/<key>",
        "/stream",
        "/download",
        "/boom",
        None,  # the 300 random paths: one series, no raw path
    }
    assert "/healthz" not in text
    assert value(text, "http_server_active_requests") == 0
    assert {s["network_protocol_version"] for s in series(text, COUNT)} == {"1.1"}


@pytest.mark.parametrize(
    ("app", "preload"),
    [("flask_plain:app", False), ("flask_setup:app", False), ("flask_plain:app", True)],
)
def test_otel_kit_run_gunicorn_two_sync_workers(tmp_path: Path, app: str, preload: bool) -> None:
    """The app without otel-kit, the one calling setup_metrics(app) too, and the app created
    in the arbiter before the workers fork (--preload): each request once."""
    port = free_port()
    command = gunicorn(port, app, "-w", "2", *(["--preload"] if preload else []))
    with otel_kit_run(tmp_path, command, port=port) as run:
        run.requests(200)
        for _ in range(4):
            assert run.get("/boom").status_code == 500
        # A worker records a request when it closes the response, just after the client has
        # it all: wait for the last one, then every scrape must show the same totals.
        run.wait_for(lambda text: value(text, COUNT) == 204, "204 requests")
        scrapes = [run.scrape() for _ in range(3)]
    assert len(run.pids) == 2, "the requests did not reach both workers"
    for text in scrapes:
        assert value(text, COUNT, http_route=ITEMS) == 200
        assert value(text, COUNT, http_route="/boom", error_type="ValueError") == 4
        assert value(text, COUNT) == 204
        assert value(text, "http_server_active_requests") == 0


def test_otel_kit_run_flask_run(tmp_path: Path) -> None:
    """Flask's own development server (`flask run`, threaded): the app is measured as it is
    created, and serves the metrics."""
    port = free_port()
    command = ["flask", "--app", "flask_plain", "run", "--port", str(port)]
    with otel_kit_run(tmp_path, command, port=port) as run:
        run.requests(20)
        assert run.get("/api/v1/users/ann").status_code == 200
        text = run.wait_for(lambda text: value(text, COUNT) == 21, "21 requests")
    assert value(text, COUNT, http_route=ITEMS) == 20
    assert value(text, COUNT, http_route="/api/v1/users/<user_id>") == 1
    assert value(text, "http_server_active_requests") == 0
