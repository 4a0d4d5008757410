"""The CLI defects three public FastAPI apps found (issue 19, item 8): `top` cutting routes
alike, `top --once` and its zeros, what `err %` counts; `otel-kit run` with a process that
serves nothing, a service_name set in code, and a setting every process would refuse."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
from rich.console import Console
from typer.testing import CliRunner

from otel_kit import setup_metrics
from otel_kit.cli._app import app
from otel_kit.cli.top import Frame, Row, Sort, render
from tests.integration.processes import http_server

OTEL_KIT = str(Path(sys.executable).with_name("otel-kit"))
ROUTE = "GET /api/v1/organizations/{organization_id}/projects/{project_id}/members/"


def screen(frame: Frame, width: int) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render(frame, "http://127.0.0.1:1/metrics", 2, Sort.name))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [60, 80])
def test_top_keeps_routes_that_differ_at_the_end_apart(width: int) -> None:
    rows = [Row(ROUTE + end, 1.0, 0.0, 0.001, 0.002, 0.003) for end in ("invitations", "invites")]
    lines = screen(Frame(2.0, routes=rows), width)
    shown = [line.split("  ")[0] for line in lines if line.startswith("GET ")]
    assert len(shown) == 2 and shown[0] != shown[1], lines
    assert [name[-6:] for name in shown] == ["ations", "nvites"]  # the ends, whole
    assert all(name.startswith("GET /api/") and "…" in name for name in shown)
    assert max(map(len, lines)) <= width


def test_top_says_its_error_column_counts_5xx() -> None:
    rows = [Row("GET /boom", 2.0, 0.5, None, None, None)]
    lines = screen(Frame(2.0, routes=rows, outbound=rows), 100)
    assert lines[1].startswith("2.0 req/s  5xx 50.0%")
    headers = [line.split() for line in lines if line.startswith(("HTTP route", "outbound"))]
    assert headers[0][:5] == ["HTTP", "route", "req/s", "5xx", "%"]
    # outbound errors are error_type (status >= 400, connection errors): err %
    assert headers[1][:5] == ["outbound", "HTTP", "req/s", "err", "%"]


class Growing(BaseHTTPRequestHandler):
    """An exposition with 100 requests counted before the first scrape (30 of them 5xx), and
    `step` x 10 more (3 in 10 of them 5xx) at every scrape."""

    scrapes: ClassVar[int] = 0
    step: ClassVar[int] = 1

    def do_GET(self) -> None:
        Growing.scrapes += 1
        name = "http_server_request_duration_seconds"
        lines = [f"# TYPE {name} histogram"]
        for status, share in (("200", 7), ("503", 3)):
            count = share * (10 + Growing.step * Growing.scrapes)
            labels = f'http_request_method="GET",http_route="/items",http_response_status_code="{status}"'  # noqa: E501
            lines += [f'{name}_bucket{{{labels},le="{le}"}} {count}' for le in ("0.005", "+Inf")]
            lines += [f"{name}_count{{{labels}}} {count}", f"{name}_sum{{{labels}}} 0.01"]
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def growing() -> Iterator[str]:
    Growing.scrapes, Growing.step = 0, 1
    with http_server(Growing) as url:
        yield url + "/metrics"


def once(url: str, interval: str) -> list[str]:
    result = CliRunner().invoke(
        app, ["top", url, "--once", "--interval", interval], env={"COLUMNS": "100"}
    )
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_top_once_shows_the_rates_between_its_two_scrapes(growing: str) -> None:
    lines = once(growing, "1")
    assert Growing.scrapes == 2
    seconds = float(lines[1].rsplit("last ", 1)[1].rstrip("s"))
    [row] = [line.split() for line in lines if line.startswith("GET /items")]
    # 10 requests between the scrapes (not the 120 counted since start), 3 of them 5xx
    assert float(row[2]) * seconds == pytest.approx(10, rel=0.1)
    assert row[3] == "30.0%"
    assert lines[-1] == row_line(lines)  # no hint under a frame with traffic


def row_line(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("GET /items"))


def test_top_once_without_traffic_says_why_it_shows_zeros(growing: str) -> None:
    Growing.step = 0  # traffic before top started, none while it watches
    lines = once(growing, "0.2")
    assert row_line(lines).split()[2:4] == ["0.0", "-"]
    assert re.fullmatch(
        r"no traffic in the 0\.\ds between the two scrapes \(--once shows what happens during "
        r"--interval\)",
        lines[-1],
    )


# --- otel-kit run: real processes -------------------------------------------------------

SERVED_NOWHERE = "serves no metrics: it has imported no Starlette/FastAPI app"


def otel_kit_run(tmp_path: Path, script: str, *options: str) -> subprocess.CompletedProcess[str]:
    """`otel-kit run [options] python script.py` in `tmp_path`, to its end."""
    (tmp_path / "script.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_"))}
    return subprocess.run(
        [OTEL_KIT, "run", *options, sys.executable, "script.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


WORKER = """\
import sqlalchemy
engine = sqlalchemy.create_engine("sqlite://")
with engine.connect() as connection:
    print(connection.execute(sqlalchemy.text("SELECT 41 + 1")).scalar_one())
"""


def test_run_says_once_that_a_process_without_app_or_port_serves_nothing(
    tmp_path: Path,
) -> None:
    done = otel_kit_run(tmp_path, WORKER)
    assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr
    assert done.stderr.count(SERVED_NOWHERE) == 1, done.stderr
    [line] = [line for line in done.stderr.splitlines() if SERVED_NOWHERE in line]
    assert "script.py" in line
    assert "--prometheus-port or OTEL_EXPORTER_PROMETHEUS_PORT" in line
    assert "--metrics-exporter otlp" in line


@pytest.mark.parametrize(
    ("first", "options"),
    [("import starlette.applications\n", ()), ("", ("--prometheus-port", "0"))],
    ids=["an app module", "a port"],
)
def test_run_is_quiet_where_metrics_are_served(
    tmp_path: Path, first: str, options: tuple[str, ...]
) -> None:
    done = otel_kit_run(tmp_path, first + WORKER, *options)
    assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr
    assert SERVED_NOWHERE not in done.stderr


NAMED = """\
from fastapi import FastAPI
from otel_kit import setup_metrics
handle = setup_metrics(FastAPI(), service_name="billing", cardinality_limit=50)
print(handle.resource.attributes["service.name"], handle.settings.cardinality_limit)
"""


def test_run_names_the_service_name_set_in_code_it_drops(tmp_path: Path) -> None:
    done = otel_kit_run(tmp_path, NAMED, "--cardinality-limit", "50")
    assert (done.returncode, done.stdout) == (0, "unknown_service 50\n"), done.stderr
    [line] = [line for line in done.stderr.splitlines() if "ignored" in line]
    # the same cardinality_limit was given to otel-kit run: not a dropped setting
    assert line == (
        "otel-kit: setup_metrics(service_name='billing') ignored: otel-kit run set this process "
        "up before the application; give them to otel-kit run instead: --service-name or "
        "OTEL_KIT_SERVICE_NAME / OTEL_SERVICE_NAME"
    )
    done = otel_kit_run(tmp_path, NAMED, "--service-name", "billing", "--cardinality-limit", "50")
    assert (done.returncode, done.stdout) == (0, "billing 50\n"), done.stderr
    assert "ignored" not in done.stderr


@pytest.mark.usefixtures("global_metrics")
def test_a_second_setup_names_the_settings_it_ignores(caplog: pytest.LogCaptureFixture) -> None:
    # A free port, not the default 9464 another suite running at once may hold.
    port = {"prometheus_host": "127.0.0.1", "prometheus_port": 0}
    first = setup_metrics(service_name="shop", **port)
    assert setup_metrics(service_name="shop", metrics_bearer_token="s3cret", **port) is first
    assert [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()] == [
        "otel-kit: setup_metrics() already ran; ignored: metrics_bearer_token=***"
    ]


def test_run_refuses_the_default_registry_without_prometheus_multiprocess_mode(
    tmp_path: Path,
) -> None:
    ran = tmp_path / "ran"
    done = otel_kit_run(
        tmp_path, f"open({str(ran)!r}, 'w')\n", "--metrics-include-default-registry", "true"
    )
    assert done.returncode == 2
    assert done.stderr == (
        "otel-kit run: invalid setting metrics_include_default_registry / "
        "OTEL_KIT_METRICS_INCLUDE_DEFAULT_REGISTRY = true: with several processes "
        "(multiproc_dir, as under otel-kit run) it needs prometheus_client's multiprocess mode: "
        "set PROMETHEUS_MULTIPROC_DIR to an empty directory before the app starts "
        "(from --metrics-include-default-registry)\n"
    )
    assert not ran.exists()  # the command never started, to run without metrics
    (tmp_path / "prometheus").mkdir()
    done = subprocess.run(
        [OTEL_KIT, "run", "--metrics-include-default-registry", "true", sys.executable, "-c", ""],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")
