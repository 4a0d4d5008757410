"""Exemplars end to end (issue 16): a real Prometheus 3 with exemplar storage scrapes an app
that traces itself (tests/integration/apps/traced.py) under `otel-kit run`; a request made
slow on purpose (0.3 s) is found through /api/v1/query_exemplars in its bucket (le=5: buckets
0.1, 0.25, 5, so a busy machine cannot move it to another), with
the trace and span ids of that request's server span as the app's span exporter wrote them.
Under two gunicorn workers the exemplars pass through the multi-process merge: a slow request
answered by each worker is found. The server spans are contrib's FastAPIInstrumentor's, which
`otel-kit run` once made skip the app (its stack began with otel-kit's middleware).
Every latency panel of the generated dashboards, its query as Grafana sends it for exemplars,
finds the trace id of the request whose statement, command or call it measured."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from otel_kit.generate import dashboards
from otel_kit.generate._grafana import shows_exemplars
from tests import go_tools
from tests.integration.otel_kit_run import Run, gunicorn, otel_kit_run, uvicorn
from tests.integration.processes import free_port
from tests.integration.prometheus_server import prometheus, wait_for

pytestmark = pytest.mark.integration
CONTRIB = "opentelemetry.instrumentation.fastapi"
BUCKETS = {"OTEL_KIT_DURATION_BUCKETS": "0.1,0.25,5"}
SLOW = 'http_server_request_duration_seconds_bucket{http_route="/slow"}'


def exemplars(prom: str, query: str = SLOW) -> list[tuple[str, dict[str, str], float]]:
    """(le, exemplar labels, value) of every exemplar Prometheus stored for `query`'s series
    (by default /slow's buckets)."""
    now = time.time()
    params = {"query": query, "start": str(now - 600), "end": str(now + 60)}
    body = httpx.get(f"{prom}/api/v1/query_exemplars", params=params, timeout=10).json()
    assert body["status"] == "success", body
    return [
        (series["seriesLabels"]["le"], exemplar["labels"], float(exemplar["value"]))
        for series in body["data"]
        for exemplar in series["exemplars"]
    ]


def server_span(run: Run, trace_id: str) -> dict[str, Any]:
    """The SERVER span of `trace_id` the app's span exporter wrote (waits for it)."""
    deadline = time.monotonic() + 10
    while True:
        path = run.cwd / "spans.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        found = [
            span
            for span in map(json.loads, lines)
            if span["trace_id"] == trace_id and span["kind"] == "SERVER"
        ]
        if found:
            (span,) = found
            return dict(span)
        if time.monotonic() > deadline:
            pytest.fail(f"no server span of trace {trace_id} in spans.jsonl:\n{lines}")
        time.sleep(0.05)


def newest_of(prom: str, traces: set[str]) -> list[tuple[str, dict[str, str], float]]:
    """The exemplars of `traces` Prometheus stored, once it has one (waits for a scrape)."""
    deadline = time.monotonic() + 30
    while True:
        found = [e for e in exemplars(prom) if e[1].get("trace_id") in traces]
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"no exemplar of {traces} within 30 s: {exemplars(prom)}")
        time.sleep(0.2)


@pytest.mark.parametrize("form", ["uvicorn", "gunicorn -w 2"])
def test_a_slow_requests_bucket_has_the_trace_id_of_its_server_span(
    tmp_path: Path, form: str
) -> None:
    port = free_port()
    if form == "uvicorn":
        command, workers = uvicorn(port, app="traced:app"), 1
    else:
        command, workers = gunicorn(port, "-w", "2", app="traced:app"), 2
    config = (
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: app\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    (tmp_path / "prom").mkdir()
    with (
        otel_kit_run(tmp_path, command, port=port, env=BUCKETS) as run,
        prometheus(
            config, tmp_path / "prom", go_tools.prometheus3(), ["--enable-feature=exemplar-storage"]
        ) as prom,
    ):
        for i in range(5):
            assert run.get(f"/items/{i}").status_code == 200  # fast: other buckets, routes
        wait_for(prom, 'up{job="app"} == 1')
        pids: set[int] = set()  # the workers whose slow request Prometheus has the exemplar of
        answers: dict[str, int] = {}  # trace id: the PID that answered
        with ThreadPoolExecutor(4) as pool:
            for _ in range(10):  # concurrent fresh connections, so both workers answer some
                batch = [r.json() for r in pool.map(lambda _: run.get("/slow"), range(4))]
                for answer in batch:
                    trace_id, pid = answer["trace_id"], answer["pid"]
                    span = server_span(run, trace_id)
                    assert (span["route"], span["pid"]) == ("/slow", pid)
                    assert span["scope"] == CONTRIB  # otel-kit run keeps contrib's instrumentor
                    answers[trace_id] = pid
                # The newest per bucket wins across workers: the one finished last, at least.
                for le, labels, value in newest_of(prom, {a["trace_id"] for a in batch}):
                    span = server_span(run, labels["trace_id"])
                    assert (le, labels["span_id"]) == ("5.0", span["span_id"])
                    assert 0.29 < value < 5  # asyncio.sleep(0.3) may end a little early
                    pids.add(answers[labels["trace_id"]])
                if len(pids) == workers:
                    break
        assert len(pids) == workers, run.output()
        # Nothing else in /slow's buckets: only slow requests' own traces, all in le=5.
        stored = exemplars(prom)
        assert {le for le, _, _ in stored} == {"5.0"}
        assert {labels["trace_id"] for _, labels, _ in stored} <= set(answers)


def as_grafana_sends(expr: str) -> str:
    """A panel's expression with its variables as Grafana fills them: every value ("All")."""
    expr = expr.replace("$__rate_interval", "1m")
    for variable in ("$job", "$instance", "$route"):
        expr = expr.replace(variable, ".*")
    return expr


def test_every_latency_panels_exemplars_have_the_trace_id_of_their_request(
    tmp_path: Path, redis_server: int
) -> None:
    port = free_port()
    config = (
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: app\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    (tmp_path / "prom").mkdir()
    env = {**BUCKETS, "REDIS_PORT": str(redis_server)}
    with (
        otel_kit_run(tmp_path, uvicorn(port, app="traced:app"), port=port, env=env) as run,
        prometheus(
            config, tmp_path / "prom", go_tools.prometheus3(), ["--enable-feature=exemplar-storage"]
        ) as prom,
    ):
        wait_for(prom, 'up{job="app"} == 1')
        slow = run.get("/slow").json()["trace_id"]
        calls = run.get("/dependencies").json()["trace_id"]
        # The request's own trace for each of its measurements; the outbound call's /items/1
        # is a request of its own (another trace) on the HTTP panel.
        expected = {
            "Latency p50 / p95 / p99 by route": slow,
            "Query latency p50 / p95 / p99 by operation": calls,
            "Connection wait time p50 / p95 / p99": calls,
            "Redis latency p50 / p95 / p99 by command": calls,
            "Call latency p50 / p95 / p99 by server": calls,
        }
        panels = {
            panel.title: panel.queries[0].expr
            for dashboard in dashboards.DASHBOARDS
            for panel in dashboard.panels
            if shows_exemplars(panel)
        }
        assert set(panels) == set(expected)
        for title, expr in panels.items():
            deadline = time.monotonic() + 30
            while True:
                found = {
                    labels.get("trace_id")
                    for _, labels, _ in exemplars(prom, as_grafana_sends(expr))
                }
                if expected[title] in found:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"{title}: no exemplar of {expected[title]} in {found}")
                time.sleep(0.2)
            if title != "Latency p50 / p95 / p99 by route":  # one request made these
                assert found == {calls}, title
