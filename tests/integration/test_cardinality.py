"""Cardinality attacks: what clients send cannot add series or memory; an app's own labels stop
at the cardinality limit.

A real uvicorn process (tests/integration/apps/cardinality.py) gets 112,500 requests from wrk
(bench/wrk_mix.lua, mix "attack", exactly that many): distinct random paths, random unknown
methods, random path values, query strings, header names and values, and a new tenant for the
app's own `tenant.requests{tenant}` counter each time. Every random token contains "zq", which
must appear nowhere in the exposition. In-process: outbound calls to many hosts, and many
distinct SQL texts.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess

import httpx
import psutil
import pytest
import sqlalchemy as sa

from tests.exposition import samples, series, value
from tests.handles import MakeHandle
from tests.integration.processes import ROOT, free_port, server

pytestmark = pytest.mark.integration
COUNT = "http_server_request_duration_seconds_count"
TENANTS = "tenant_requests_total"
LIMIT = 2000  # the default cardinality_limit
KINDS = 5  # request kinds of the "attack" mix, sent in turn
WARMUP = 12_500  # 2,500 tenants: past the limit before memory is measured
CHUNKS, CHUNK = 4, 25_000  # the 100,000 requests measured
TOTAL = WARMUP + CHUNKS * CHUNK
# RSS after the warm-up and after 100,000 more requests: measured +0.2 to +0.4 MB. A series per
# distinct path (~1.3 KB each, bench/results/scrape.md) would add 50+ MB; an app that merely
# keeps each request's path added 9 MB (measured); 20 bytes kept per request would be 2 MB.
MAX_RSS_GROWTH = 2 * 2**20


def attack(base: str, budget: int, first: int) -> None:
    """Exactly `budget` requests of the attack mix (wrk exits once the last response is in)."""
    script = ROOT / "bench" / "wrk_mix.lua"
    command = ["wrk", "-t1", "-c16", "-d300s", "-s", str(script), base]
    done = subprocess.run(
        [*command, "--", "attack", str(budget), str(first)],
        capture_output=True,
        text=True,
        timeout=330,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_random_paths_methods_queries_and_headers_add_no_series_and_no_memory() -> None:
    assert shutil.which("wrk"), "wrk is installed by .ci/run (Debian package wrk)"
    port = free_port()
    # h11: httptools (uvicorn[standard]) answers unknown methods with 400 before the app runs
    app = "tests.integration.apps.cardinality:app"
    args = ["-m", "uvicorn", app, "--port", str(port), "--http", "h11", "--no-access-log"]
    with server(args, port) as base, httpx.Client(base_url=base, timeout=30) as client:
        [uvicorn] = [p for p in psutil.Process().children() if str(port) in p.cmdline()]
        attack(base, WARMUP, 0)
        text = client.get("/metrics").text  # a scrape's buffers are in RSS from here on
        rss = [uvicorn.memory_info().rss]
        lines = [len(samples(text))]
        for chunk in range(CHUNKS):
            attack(base, CHUNK, WARMUP + chunk * CHUNK)
            text = client.get("/metrics").text
            rss.append(uvicorn.memory_info().rss)
            lines.append(len(samples(text)))

    per_kind = TOTAL // KINDS
    requests = {labels: n for (name, labels), n in samples(text).items() if name == COUNT}
    http = {"url_scheme": "http", "network_protocol_version": "1.1"}
    get, other = {"http_request_method": "GET", **http}, {"http_request_method": "_OTHER", **http}
    items, tenants = {"http_route": "/items/{item_id}"}, {"http_route": "/tenants/{tenant}"}
    assert requests == {
        frozenset(labels.items()): per_kind
        for labels in (
            {**get, "http_response_status_code": "404"},  # random paths: no http_route
            {**other, "http_response_status_code": "404"},  # random methods, random paths
            {**other, **items, "http_response_status_code": "405"},  # random methods on a route
            {**get, **items, "http_response_status_code": "200"},  # random values, query, headers
            {**get, **tenants, "http_response_status_code": "200"},
        )
    }
    assert value(text, "http_server_active_requests") == 0
    assert len(series(text, "http_server_active_requests")) == 2  # GET and _OTHER
    # The app's own metric, labelled by request input: LIMIT tenants, then the overflow series.
    assert len(series(text, TENANTS)) == LIMIT + 1
    assert value(text, TENANTS, otel_metric_overflow="true") == per_kind - LIMIT
    assert value(text, TENANTS) == per_kind
    overflowing = {name for name, labels in samples(text) if "otel_metric_overflow" in dict(labels)}
    assert overflowing == {TENANTS}
    assert "target_info{" in text
    assert "zq" not in text.lower()  # no path, method, query, header or path value anywhere
    assert lines == [lines[0]] * (CHUNKS + 1), lines
    assert rss[-1] - rss[0] < MAX_RSS_GROWTH, [f"{r / 2**20:.1f} MB" for r in rss]


def test_outbound_calls_to_many_hosts_stop_at_the_limit(make_handle: MakeHandle) -> None:
    """`server_address` is the URL host: one series per host up to the cardinality limit."""
    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0, cardinality_limit=10)
    port = free_port()  # nothing listens there, on any loopback address: every call is refused
    with httpx.Client() as client:
        for i in range(1, 51):
            with pytest.raises(httpx.ConnectError):
                client.get(f"http://127.0.0.{i}:{port}/zq{i}?zq={i}", headers={"X-Zq": "zq"})
    text = handle.render().decode()
    outbound = "http_client_request_duration_seconds_count"
    hosts = {s.get("server_address") for s in series(text, outbound)}
    assert hosts == {None} | {f"127.0.0.{i}" for i in range(1, 11)}  # None: the overflow series
    assert value(text, outbound, server_port=str(port), error_type="httpx.ConnectError") == 10
    assert value(text, outbound, otel_metric_overflow="true") == 40
    assert "zq" not in text.lower()


def test_distinct_sql_texts_share_a_few_series(make_handle: MakeHandle) -> None:
    """Literals, table names and comments vary; the operation comes from a fixed verb list."""
    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0)
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        for _ in range(100):
            table, literal = f"zq_{secrets.token_hex(4)}", f"zq{secrets.token_hex(8)}"
            conn.execute(sa.text(f"CREATE TABLE {table} (zq_name TEXT)"))
            conn.execute(sa.text(f"INSERT INTO {table} VALUES ('{literal}')"))
            where = f"WHERE zq_name = '{literal}' OR {secrets.randbelow(10**9)} = 0"
            conn.execute(sa.text(f"/* zq {literal} */ select * from {table} {where}")).all()
            with pytest.raises(sa.exc.OperationalError):
                conn.execute(sa.text(f"{literal.upper()} {table}"))  # not SQL: OTHER
            conn.rollback()
    engine.dispose()
    text = handle.render().decode()
    operations = {
        (labels.get("db_operation_name"), labels.get("error_type")): n
        for (name, found), n in samples(text).items()
        if name == "db_client_operation_duration_seconds_count"
        for labels in [dict(found)]
    }
    assert operations == {
        ("CREATE", None): 100,
        ("INSERT", None): 100,
        ("SELECT", None): 100,
        ("OTHER", "sqlite3.OperationalError"): 100,
        ("ROLLBACK", None): 100,  # conn.rollback(): a transaction end, an operation too
    }
    assert "zq" not in text.lower()
