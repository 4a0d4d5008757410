"""OTLP push from processes forked without exec (gunicorn `--preload`, the arbiter under
`otel-kit run`, multiprocessing's fork): each process pushes its own stream, counting from the
fork, so the Collector's sum over processes is what was really recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from bisect import bisect_left
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from tests.integration.otlp_receiver import OTLPReceiver, points, resource, total_count
from tests.integration.processes import ROOT

pytestmark = pytest.mark.integration
DURATION = "http.server.request.duration"  # an otel-kit fast histogram
CACHE = "cache.requests"  # an otel-kit fast counter

# Records 100 of everything, forks two children that record 7 and 11 more (at values 7.0 and
# 11.0 on the histogram) and push before exiting; then the parent records 3 more (at 1.0).
SCRIPT = """
import asyncio, json, os, sys, time, traceback

import httpx
from opentelemetry import metrics
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import otel_kit

app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
handle = otel_kit.setup_metrics(
    app, metrics_exporter="otlp", otlp_endpoint=sys.argv[1], export_interval_ms=100
)
meter = metrics.get_meter("fork-test")
orders = meter.create_counter("app.orders")
latency = meter.create_histogram("app.latency")
inflight = meter.create_up_down_counter("app.inflight")


async def requests(n):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        for _ in range(n):
            (await client.get("/")).raise_for_status()


def record(n, value):
    asyncio.run(requests(n))
    for _ in range(n):
        orders.add(1)
        latency.record(value)
        otel_kit.record_cache_lookup("c", True)


inflight.add(5)
record(100, 1.0)
forked_after = time.time_ns()
children = []
for n in (7, 11):
    pid = os.fork()
    if pid == 0:
        try:
            record(n, float(n))
            handle.shutdown()
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    children.append(pid)
record(3, 1.0)
statuses = [os.waitpid(pid, 0)[1] for pid in children]
handle.shutdown()
print(json.dumps({"forked_after": forked_after, "children": children, "statuses": statuses}))
"""


def run_script(
    tmp_path: Path, receiver: OTLPReceiver, env: dict[str, str]
) -> tuple[dict[str, Any], list[ExportMetricsServiceRequest]]:
    """The script's result, and the requests with data it sent (an export that ran before
    anything was recorded is empty)."""
    script = tmp_path / "fork.py"
    script.write_text(SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), receiver.endpoint],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # the forked children share its process group
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert process.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr, stderr.decode()
    result: dict[str, Any] = json.loads(stdout)
    assert result["statuses"] == [0, 0], stderr.decode()
    return result, [request for request in receiver.requests() if request.resource_metrics]


def latest(requests: list[ExportMetricsServiceRequest], attribute: str) -> dict[Any, Any]:
    """The last request of each process, by a resource attribute telling processes apart."""
    return {resource(request)[attribute]: request for request in requests}


def check_streams(streams: dict[Any, ExportMetricsServiceRequest], forked_after: int) -> None:
    """Each process's last push has its own counts: parent 103, children 7 and 11."""
    assert len(streams) == 3
    by_count = {int(total_count(request, "app.orders")): request for request in streams.values()}
    assert sorted(by_count) == [7, 11, 103]  # not 107 and 111: the children's own counts
    for counted, request in by_count.items():
        # Fast instruments as well as the SDK's; the up-down counter is a current value.
        assert total_count(request, CACHE) == counted
        assert total_count(request, DURATION) == counted
        assert total_count(request, "app.inflight") == 5
        (histogram,) = points(request, "app.latency").values()
        value = 1.0 if counted == 103 else float(counted)
        buckets = [0] * (len(histogram.explicit_bounds) + 1)
        buckets[bisect_left(histogram.explicit_bounds, value)] = counted
        assert (histogram.count, histogram.sum) == (counted, counted * value)
        assert list(histogram.bucket_counts) == buckets
        for point in points(request, DURATION).values():
            assert sum(point.bucket_counts) == point.count
        starts = [
            point.start_time_unix_nano
            for name in ("app.orders", "app.latency", CACHE, DURATION)
            for point in points(request, name).values()
        ]
        if counted == 103:  # the parent's streams go on from its setup
            assert max(starts) < forked_after
        else:  # a child's stream starts at its fork
            assert min(starts) >= forked_after
    # What a Collector adds up over the processes is what was recorded.
    for name in ("app.orders", CACHE, DURATION):
        assert sum(total_count(request, name) for request in streams.values()) == 121


def test_forked_children_push_their_own_streams(tmp_path: Path) -> None:
    with OTLPReceiver() as receiver:
        result, requests = run_script(tmp_path, receiver, {})
    streams = latest(requests, "service.instance.id")
    assert len(streams) == 3  # a fresh service.instance.id in each child
    check_streams(streams, result["forked_after"])


def test_a_configured_instance_id_is_kept(tmp_path: Path) -> None:
    """The user's `service.instance.id` stays in every process (the SDK alone would replace it
    in children). The processes' streams then differ only by other resource attributes, here
    the process detector's `process.pid`, which each child updates; without such an attribute
    they would collide in the Collector, which is what that configuration asks for."""
    env = {
        "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=fixed",
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "process",
    }
    with OTLPReceiver() as receiver:
        result, requests = run_script(tmp_path, receiver, env)
    assert {resource(request)["service.instance.id"] for request in requests} == {"fixed"}
    streams = latest(requests, "process.pid")
    (parent,) = set(streams) - set(result["children"])
    assert set(streams) == {parent, *result["children"]}
    for pid in result["children"]:
        assert resource(streams[pid])["process.parent_pid"] == parent
    check_streams(streams, result["forked_after"])
