"""`otel-kit top`: the delta/percentile math, the rendered screen, and the real thing in tmux.

The tmux tests run `top` in a detached tmux session of fixed size against a real uvicorn
process (tests/integration/top_app.py) under steady traffic with known latencies.
"""

from __future__ import annotations

import io
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import typer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from rich.console import Console
from typer.testing import CliRunner

from otel_kit.cli import top
from otel_kit.cli._exposition import Samples, flatten, parse
from otel_kit.cli._rates import histogram_quantile, increase
from tests.integration.processes import ROOT, free_port, server

INF = math.inf
OTEL_KIT = str(Path(sys.executable).with_name("otel-kit"))
# /slow sleeps 0.3 s: all its requests in (0.25, 0.5] -> 0.25 + 0.25 * q
SLOW = {"p50": "375.0ms", "p95": "487.5ms", "p99": "497.5ms"}


def cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    top.register(app)
    return app


# --- the math: known buckets -> known quantiles ------------------------------------------


def test_quantile_interpolates_inside_the_bucket_like_promql() -> None:
    buckets = [(0.1, 10.0), (0.25, 30.0), (0.5, 90.0), (1.0, 100.0), (INF, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.25 + 0.25 * 20 / 60)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.75)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.95)
    # the first bucket starts at 0
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.1)
    # order of the input does not matter
    assert histogram_quantile(0.95, list(reversed(buckets))) == pytest.approx(0.75)


def test_quantile_in_the_inf_bucket_is_the_largest_finite_bound() -> None:
    buckets = [(0.1, 1.0), (0.5, 2.0), (INF, 10.0)]
    assert histogram_quantile(0.5, buckets) == 0.5
    assert histogram_quantile(0.15, buckets) == pytest.approx(0.3)  # rank 1.5 in (0.1, 0.5]


def test_quantile_without_data_is_none() -> None:
    assert histogram_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]) is None
    assert histogram_quantile(0.5, [(0.1, 3.0), (1.0, 4.0)]) is None  # no +Inf bucket
    assert histogram_quantile(0.5, [(INF, 4.0)]) is None  # PromQL needs two buckets
    assert histogram_quantile(1.5, [(0.1, 3.0), (INF, 4.0)]) is None


def test_quantile_lifts_a_torn_bucket_like_promql() -> None:
    # 0.2's count below 0.1's (a scrape torn between updates) counts as 0.1's
    assert histogram_quantile(0.75, [(0.1, 6.0), (0.2, 4.0), (0.4, 10.0), (INF, 12.0)]) == (
        pytest.approx(0.2 + 0.2 * 3 / 4)
    )


def test_increase_counts_a_restart_from_zero() -> None:
    assert increase(None, 5.0) == 5.0  # a series born between the scrapes
    assert increase(3.0, 5.0) == 2.0
    assert increase(7.0, 2.0) == 2.0  # the process restarted: 2 since


def scrape(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return flatten(parse(text, openmetrics=False).families)


def test_frame_from_two_scrapes_of_a_prometheus_client_app() -> None:
    registry = CollectorRegistry()
    labels = ["http_request_method", "http_route", "http_response_status_code"]
    duration = Histogram(
        "http_server_request_duration_seconds", "Requests.", labels, registry=registry
    )
    active = Gauge(
        "http_server_active_requests", "Active.", ["http_request_method"], registry=registry
    )
    cache = Counter("cache_requests", "Lookups.", ["cache_name", "cache_result"], registry=registry)
    db = Histogram(
        "db_client_operation_duration_seconds",
        "DB.",
        ["db_system_name", "db_operation_name", "error_type"],
        registry=registry,
    )
    for _ in range(50):  # before the first scrape: must not count
        duration.labels("GET", "/users/{user_id}", "200").observe(2.0)
    cache.labels("redis", "hit").inc(100)
    before = scrape(registry)

    for _ in range(18):
        duration.labels("GET", "/users/{user_id}", "200").observe(0.3)  # (0.25, 0.5]
    for _ in range(2):
        duration.labels("GET", "/users/{user_id}", "503").observe(0.07)  # (0.05, 0.075]
    for _ in range(4):
        duration.labels("POST", "/orders", "201").observe(0.02)  # (0.01, 0.025]
    active.labels("GET").set(3)
    active.labels("POST").set(1)
    cache.labels("redis", "hit").inc(3)
    cache.labels("redis", "miss").inc(1)
    cache.labels("local", "miss").inc(2)
    db.labels("postgresql", "SELECT", "").observe(0.004)
    db.labels("postgresql", "SELECT", "TimeoutError").observe(12.0)  # over the last bucket
    frame = top.build_frame(before, scrape(registry), seconds=2.0)

    users, orders = sorted(frame.routes, key=lambda r: -r.rate)
    assert users.name == "GET /users/{user_id}"
    assert users.rate == 10.0  # 20 requests in 2 s; the 50 before are not counted
    assert users.error_ratio == 0.1
    # 2 in (0.05, 0.075], 18 in (0.25, 0.5]: rank 10 -> 0.25 + 0.25 * 8/18
    assert users.p50 == pytest.approx(0.25 + 0.25 * 8 / 18)
    assert users.p95 == pytest.approx(0.25 + 0.25 * 17 / 18)
    assert users.p99 == pytest.approx(0.25 + 0.25 * 17.8 / 18)
    assert (orders.name, orders.rate, orders.error_ratio) == ("POST /orders", 2.0, 0.0)
    assert orders.p50 == pytest.approx(0.01 + 0.015 * 0.5)
    assert frame.active == {"GET": 3.0, "POST": 1.0}
    assert frame.cache == [("local", 1.0, 0.0), ("redis", 2.0, 0.75)]
    # error_type="" is no label at all in the exposition; the timeout is an error
    [select] = frame.database
    assert (select.name, select.rate, select.error_ratio) == ("postgresql SELECT", 1.0, 0.5)
    assert select.p99 == 10.0  # rank in the +Inf bucket: the largest finite bound
    assert frame.outbound == []


def render(frame: top.Frame, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(top.render(frame, "http://127.0.0.1:1/metrics", 2.0, top.Sort.rps))
    return console.export_text()


def test_screen_wide_and_narrow() -> None:
    row = top.Row("GET /users/{user_id}", 12.5, 0.25, 0.375, 0.4875, 0.4975)
    idle = top.Row("POST /orders", 0.0, None, None, None, None)
    frame = top.Frame(2.0, routes=[idle, row], cache=[("redis", 4.0, 0.5)], active={"GET": 2})
    wide = render(frame, 100).splitlines()
    assert wide[1].rstrip() == "12.5 req/s  5xx 25.0%  in progress 2 (GET 2)  last 2.0s"
    assert wide[2].split() == ["HTTP", "route", "req/s", "5xx", "%", "p50", "p95", "p99"]
    assert wide[4].split() == ["GET", "/users/{user_id}", "12.5", "25.0%", *SLOW.values()]
    assert wide[5].split() == ["POST", "/orders", "0.0", "-", "-", "-", "-"]  # idle: last
    assert wide[6].split() == ["cache", "lookups/s", "hit", "%"]
    assert wide[8].split() == ["redis", "4.0", "50.0%"]
    narrow = render(frame, 60).splitlines()
    assert max(len(line) for line in narrow) <= 60
    assert narrow[4].split() == ["GET", "/users/{user_id}", "12.5", "25.0%", "487.5ms", "497.5ms"]


def test_format_seconds() -> None:
    assert [top.format_seconds(v) for v in (None, 0.0042, 0.4875, 1.0, 12.345)] == [
        "-",
        "4.2ms",
        "487.5ms",
        "1.00s",
        "12.35s",
    ]


def test_unreachable_url_exits_2_with_a_message() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    result = CliRunner().invoke(cli(), ["top", url, "--once", "--interval", "0.1"])
    assert result.exit_code == 2
    assert f"otel-kit top: cannot reach {url}" in result.output
    assert "Traceback" not in result.output


# --- the real thing: a uvicorn process, steady traffic, top in tmux ----------------------


@contextmanager
def traffic(base: str, paths: list[str]) -> Iterator[list[BaseException]]:
    """Request `paths` in a loop from a thread until the block ends; yields its errors."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def drive() -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            while not stop.is_set():
                for path in paths:
                    try:
                        client.get(path)
                    except httpx.HTTPError as exc:
                        errors.append(exc)

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def top_app() -> Iterator[str]:
    port = free_port()
    args = ["-m", "uvicorn", "tests.integration.top_app:app", "--port", str(port)]
    with server([*args, "--no-access-log"], port, {"TOP_APP_PORT": str(port)}) as base:
        paths = ["/slow", "/fast", "/boom", "/items/7", "/proxy"]
        with traffic(base, paths) as errors:
            yield base
        assert errors == []


class Tmux:
    """A private tmux server (its own socket) with one session running a plain shell."""

    def __init__(self, width: int, height: int) -> None:
        self.socket = f"otel-kit-test-{os.getpid()}-{width}"
        self.run(
            "new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height),
            "-c", str(ROOT), "env", "PS1=$ ", "bash", "--norc", "--noprofile",
        )  # fmt: skip

    def run(self, *args: str) -> str:
        command = ["tmux", "-L", self.socket, *args]
        return subprocess.run(
            command, check=True, capture_output=True, text=True, timeout=10
        ).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "top")

    def wait_for(self, ready: Callable[[str], bool], seconds: float = 30) -> str:
        deadline = time.monotonic() + seconds
        while not ready(screen := self.screen()):
            if time.monotonic() > deadline:
                pytest.fail(f"tmux screen not as expected after {seconds} s:\n{screen}")
            time.sleep(0.2)
        return screen

    def kill(self) -> None:
        """Stop this tmux server (and `top` in it) and remove its socket file."""
        socket = self.run("display-message", "-p", "#{socket_path}").strip()
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        Path(socket).unlink(missing_ok=True)


@contextmanager
def tmux(width: int, height: int) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed: apt-get install tmux")
    session = Tmux(width, height)
    try:
        yield session
    finally:
        session.kill()


def row(screen: str, name: str) -> list[str]:
    """The cells of the line starting with `name` (split on blanks after the name)."""
    line = next((line for line in screen.splitlines() if line.startswith(name + " ")), None)
    return [] if line is None else line[len(name) :].split()


def steady(screen: str, name: str, latencies: list[str]) -> bool:
    """`name`'s row shows traffic and the expected latencies."""
    cells = row(screen, name)
    return (
        len(cells) >= 2 + len(latencies)
        and float(cells[0]) > 0
        and cells[-len(latencies) :] == latencies
    )


def start_top(session: Tmux, base: str, *options: str) -> None:
    command = [OTEL_KIT, "top", f"{base}/metrics", *options]
    session.run("send-keys", "-t", "top", shlex.join(command) + "; echo exit-status-$?", "Enter")


def stop_top(session: Tmux) -> str:
    session.run("send-keys", "-t", "top", "C-c")
    screen = session.wait_for(lambda s: re.search(r"^exit-status-\d+$", s, re.M) is not None, 15)
    assert re.search(r"^exit-status-0$", screen, re.M), screen
    assert "Traceback" not in screen
    # the terminal is back: main screen, cursor visible
    assert session.run(
        "display-message", "-p", "-t", "top", "#{alternate_on} #{cursor_flag}"
    ).split() == ["0", "1"]
    return screen


@pytest.mark.integration
def test_top_in_tmux_shows_routes_and_known_percentiles(top_app: str) -> None:
    outbound = f"GET 127.0.0.1:{top_app.rsplit(':', 1)[1]}"  # /proxy calling /slow
    latencies = list(SLOW.values())
    with tmux(110, 40) as session:
        start_top(session, top_app, "--interval", "1")

        def ready(screen: str) -> bool:
            # A scrape may land between the two lookups of one /items request: wait for a
            # frame that holds whole requests only.
            return (
                steady(screen, "GET /slow", latencies)
                and steady(screen, "GET /proxy", latencies)
                and steady(screen, outbound, latencies)
                and row(screen, "local")[-1:] == ["50.0%"]
            )

        screen = session.wait_for(ready)
        print(screen)  # the capture docs/check-and-top.md shows
        assert session.run("display-message", "-p", "-t", "top", "#{alternate_on}").strip() == "1"
        lines = screen.splitlines()
        assert lines[0].startswith(f"otel-kit top {top_app}/metrics  every 1s  Ctrl-C quits")
        assert row(screen, "GET /slow")[1] == "0.0%"
        assert row(screen, "GET /boom")[1] == "100.0%"
        assert row(screen, "GET /items/{item_id}")[1] == "0.0%"
        assert float(row(screen, "GET /fast")[0]) > 0
        assert row(screen, outbound)[1] == "0.0%"
        [select] = [line for line in lines if line.startswith("sqlite") and "SELECT" in line]
        assert float(select.split()[-5]) > 0  # ops/s
        assert row(screen, "GET (unmatched)") == []  # no such traffic
        # service-wide errors are /boom's share of the requests
        summary = lines[1].split()
        assert summary[1:3] == ["req/s", "5xx"] and 0 < float(summary[3].rstrip("%")) < 100
        stop_top(session)


@pytest.mark.integration
def test_top_in_a_narrow_tmux_keeps_p95_and_p99(top_app: str) -> None:
    with tmux(60, 30) as session:
        start_top(session, top_app, "--interval", "1", "--sort", "p99")
        screen = session.wait_for(lambda s: steady(s, "GET /slow", [SLOW["p95"], SLOW["p99"]]))
        lines = screen.splitlines()
        assert lines[0].startswith(f"otel-kit top {top_app}/metrics")
        header = next(line for line in lines if line.startswith("HTTP route"))
        assert header.split() == ["HTTP", "route", "req/s", "5xx", "%", "p95", "p99"]
        # --sort p99: the slowest routes first (/slow and /proxy both take 0.3 s)
        routes = lines[lines.index(header) + 2 :][:2]
        assert sorted(line.split()[1] for line in routes) == ["/proxy", "/slow"]
        stop_top(session)


@pytest.mark.integration
def test_top_once_against_the_shop(tmp_path: Path) -> None:
    port = free_port()
    env = {"SHOP_DATABASE_URL": f"sqlite:///{tmp_path}/shop.db"}
    args = ["-m", "uvicorn", "examples.shop.app:app", "--port", str(port), "--no-access-log"]
    order = {"user_id": 1, "total": 20, "payment_method": "card"}
    with server(args, port, env) as base, httpx.Client(base_url=base, timeout=10) as client:
        for i in range(1, 6):  # users 1-5 in the cache: lookups in top's window all hit
            assert client.get(f"/users/{i}").status_code == 200

        def shop() -> None:
            for i in range(40):
                client.get(f"/users/{i % 5 + 1}")
                client.post("/orders", json=order)
                time.sleep(0.05)

        shopper = threading.Thread(target=shop)
        shopper.start()
        try:
            result = CliRunner().invoke(
                cli(),
                ["top", f"{base}/metrics", "--once", "--interval", "1"],
                env={"COLUMNS": "100"},
            )
        finally:
            shopper.join(timeout=30)
    assert result.exit_code == 0, result.output
    screen = result.output
    assert float(row(screen, "GET /users/{user_id}")[0]) > 0
    assert float(row(screen, "POST /orders")[0]) > 0
    assert float(row(screen, "POST /payments/authorize")[0]) > 0  # the shop calls itself
    assert float(row(screen, f"POST 127.0.0.1:{port}")[0]) > 0  # ... seen as outbound
    assert any(line.startswith("sqlite shop.db SELECT ") for line in screen.splitlines())
    assert row(screen, "local")[1] == "100.0%"
