"""`otel-kit check`: every rule on crafted expositions, clean ones pass, exit codes, JSON schema;
and the real output of plain prometheus_client. URLs, otel-kit's own exposition and the example
shop's, scraped on real sockets: tests/integration/test_check.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from otel_kit.cli._lint import RULES
from tests.check_command import DATA, findings, run
from tests.contrib import recorded_spans
from tests.handles import MakeHandle

# --- one crafted exposition per rule: that rule fires, and nothing else -------------------

EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "label-looks-like-id": [
        ("error", "label-looks-like-id", "cart_items_total", "cart",
         "7c9e6679-7425-40de-944b-e07fc1f90ae7", "2 of 3 values look like IDs"),
    ],
    "label-looks-like-path": [
        ("error", "label-looks-like-path", "http_requests_total", "endpoint", "/users/42",
         "3 of 4 values look like raw URL paths"),
    ],
    "label-looks-like-email": [
        ("error", "label-looks-like-email", "logins_total", "user", "ann.lee@example.com",
         "2 of 3 values look like email addresses"),
    ],
    "label-looks-like-timestamp": [
        ("error", "label-looks-like-timestamp", "batch_jobs_total", "started",
         "2024-05-01T10:00:00Z", "3 of 3 values look like times"),
    ],
    "high-cardinality-label": [
        ("error", "high-cardinality-label", "orders_total", "product", "sku-0001",
         "120 distinct values, over the threshold of 100"),
    ],
    "counter-without-total": [
        ("warning", "counter-without-total", "http_requests", None, None,
         "counter name lacks _total"),
    ],
    "counter-named-like-gauge": [
        ("warning", "counter-named-like-gauge", "current_users_total", None, None,
         "named like a current value"),
    ],
    "gauge-named-like-counter": [  # process_thread_count, an OTel semconv name: only info
        ("warning", "gauge-named-like-counter", "jobs_processed_total", None, None,
         "gauge ends in _total"),
        ("warning", "gauge-named-like-counter", "queue_count", None, None, "gauge ends in _count"),
        ("info", "promtool-lint", "process_thread_count", None, None,
         'non-histogram and non-summary metrics should not have "_count" suffix; '
         "an OpenTelemetry semantic-conventions name"),
    ],
    "unit-suffix-mismatch": [
        ("warning", "unit-suffix-mismatch", "request_duration_milliseconds", None, None,
         "_milliseconds is not a base unit (Prometheus uses seconds and bytes)"),
        ("warning", "unit-suffix-mismatch", "bytes_received_total", None, None,
         "unit _bytes is not the last word"),
        ("warning", "unit-suffix-mismatch", "payload_bytes_total", None, None,
         "a histogram named _total (a counter suffix)"),
    ],
    "missing-unit": [
        ("warning", "missing-unit", "http_request_duration", None, None,
         "'duration' with no unit in the name"),
    ],
    "missing-help": [
        ("warning", "missing-help", "queue_depth", None, None, "no HELP text"),
        ("warning", "missing-help", "workers", None, None, "no HELP text"),
    ],
    "histogram-buckets": [
        ("warning", "histogram-buckets", "db_query_duration_seconds", "le",
         "0, 5, 10, 25, 50, 75, 100, 250, 500, 10…",
         "bounds look like milliseconds in a _seconds histogram"),
        ("warning", "histogram-buckets", "job_duration_seconds", "le", "1, 10",
         "2 different bucket layouts: sums over `le` are wrong"),
        ("warning", "histogram-buckets", "job_duration_seconds", "le", "1, 10", "no +Inf bucket"),
        ("warning", "histogram-buckets", "job_duration_seconds", "le", "1, 10",
         "only 2 buckets: percentiles will be coarse"),
        ("warning", "histogram-buckets", "job_duration_seconds", "le", "1, 10",
         "bucket counts decrease as le grows"),
    ],
    "exemplar-labels-too-long": [  # one bucket's exemplar under the limit (63), one over (141)
        ("error", "exemplar-labels-too-long", "http_request_duration_seconds", None,
         '{trace_id="0af7651916cd43dd8448eb211c80…',
         "1 exemplar over 128 characters of labels (141 the longest)"),
    ],
    "exemplar-not-allowed": [  # a counter's _total may carry one: no finding
        ("error", "exemplar-not-allowed", "queue_depth", None,
         '{trace_id="0af7651916cd43dd8448eb211c80…',
         "1 exemplar on queue_depth, which may not carry one"),
        ("error", "exemplar-not-allowed", "job_duration_seconds", None,
         '{trace_id="0af7651916cd43dd8448eb211c80…',
         "1 exemplar on job_duration_seconds_count, which may not carry one"),
    ],
    "promtool-lint": [  # what promtool check metrics flags beyond the warnings
        ("info", "promtool-lint", "db_client_connection_count", None, None,
         'non-histogram and non-summary metrics should not have "_count" suffix; '
         "an OpenTelemetry semantic-conventions name"),
        ("info", "promtool-lint", "jobs_summary_bucket", None, None,
         'non-histogram metrics should not have "_bucket" suffix'),
        ("info", "promtool-lint", "jobs_summary_bucket", None, None,
         "metric name should not include type 'summary'"),
        ("info", "promtool-lint", "threshold_seconds", "le", None,
         'non-histogram metrics should not have "le" label'),
        ("info", "promtool-lint", "slo_ratio", "quantile", None,
         'non-summary metrics should not have "quantile" label'),
        ("info", "promtool-lint", "jobs_processed_counter_total", None, None,
         "metric name should not include type 'counter'"),
        ("info", "promtool-lint", "job:queue_depth", None, None,
         "metric names should not contain ':'"),
        ("info", "promtool-lint", "queueDepth", None, None,
         "metric names should be written in 'snake_case' not 'camelCase'"),
        ("info", "promtool-lint", "users_logged_in", "userTier", None,
         "label names should be written in 'snake_case' not 'camelCase'"),
        ("info", "promtool-lint", "payload_size_b", None, None,
         "metric names should not contain abbreviated units"),
        ("info", "promtool-lint", "transfer_bits", None, None,
         'use base unit "bytes" instead of "bits"'),
    ],
}  # fmt: skip


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_each_rule_on_its_crafted_exposition(rule: str) -> None:
    assert findings(str(DATA / f"{rule}.prom")) == EXPECTED[rule]


def test_every_rule_is_documented_and_tested() -> None:
    assert set(EXPECTED) | {"too-many-series"} == set(RULES)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "check-and-top.md").read_text()
    for rule, (severity, _) in RULES.items():
        assert f"| `{rule}` | {severity} |" in doc, rule


@pytest.mark.parametrize("name", ["clean.prom", "clean.om"])
def test_clean_expositions_pass_even_on_warnings(name: str) -> None:
    result = run(str(DATA / name), "--fail-on", "warning")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "no problems found"


def test_openmetrics_identity_labels_are_not_ids() -> None:
    # target_info's instance UUID, build_info's commit hash and build time: one series per
    # process, so not findings; the same values on an ordinary metric are.
    document = json.loads(run(str(DATA / "clean.om"), "--json").output)
    assert document["format"] == "openmetrics"
    names = [f["name"] for f in document["families"]]
    assert names == [
        "http_request_duration_seconds", "http_requests_total", "build_info", "target_info",
    ]  # fmt: skip
    leaked = (DATA / "clean.om").read_text().replace("build_info{", "builds_total{")
    leaked = leaked.replace("# TYPE build info", "# TYPE builds counter")
    leaked = leaked.replace("# HELP build ", "# HELP builds ")
    assert [f[1:4] for f in findings("-", stdin=leaked)] == [
        ("label-looks-like-id", "builds_total", "commit"),
        ("label-looks-like-timestamp", "builds_total", "built"),
    ]


def test_label_value_heuristics() -> None:
    lines = [
        "# HELP t_total T.",
        "# TYPE t_total counter",
        *(
            f't_total{{{label}="{value}"}} 1'
            for label, value in [
                ("status", "200"), ("port", "65535"), ("generation", "2"), ("version", "3.11.7"),
                ("route", "/users/{user_id}"), ("route", "/files/*path"), ("route", "/a/:id"),
                ("pool", "sqlite:////tmp/pytest-of-root/pytest-3/test0/shop.db"),
                ("pool", "postgresql://127.0.0.1:5432/shop"), ("pool", "redis://cache:6379/0"),
                ("node", "shop-7d9f8b6c5-x2kqz"), ("le_quoted", "0.25"),
                ("user_id", "42"), ("order", "1234567"), ("sha", "3f9a8c7d2e1b4a6c"),
                ("token", "dGhpcyBpcyBhIHNlY3JldCB0b2tlbjEyMw=="),
                ("ulid", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
                ("url", "https://api.example.com/v1/charges"),
                ("url2", "https://api.example.com/v1/charges/ch_9f8e7d6c5b4a"),
                ("day", "2024-05-01"), ("epoch_ns", "1714557600123456789"),
                ("mail", "Ann <ann@example.com>"),
            ]
        ),
    ]  # fmt: skip
    flagged = {label: rule for _, rule, _, label, _, _ in findings("-", stdin="\n".join(lines))}
    assert flagged == {
        "user_id": "label-looks-like-id",
        "order": "label-looks-like-id",
        "sha": "label-looks-like-id",
        "token": "label-looks-like-id",
        "ulid": "label-looks-like-id",
        "url2": "label-looks-like-path",
        "day": "label-looks-like-timestamp",
        "epoch_ns": "label-looks-like-timestamp",
        "mail": "label-looks-like-email",
    }
    assert ("error", "label-looks-like-id", "t_total", "user_id", "42",
            "1 of 1 values look like IDs (the label name says so)") in findings(
        "-", stdin="\n".join(lines)
    )  # fmt: skip


# --- exit codes and options ----------------------------------------------------------------


def test_exit_codes_follow_fail_on() -> None:
    errors, warnings = str(DATA / "label-looks-like-path.prom"), str(DATA / "missing-help.prom")
    assert run(errors).exit_code == 1
    assert run(warnings).exit_code == 0
    assert run(warnings, "--fail-on", "warning").exit_code == 1
    assert run(errors, "--fail-on", "warning").exit_code == 1
    result = run(warnings)
    assert result.output.splitlines()[-1] == "0 errors, 2 warnings: passes"


def test_max_series_and_cardinality_threshold() -> None:
    clean = str(DATA / "clean.prom")  # 19 series; status has 3 values
    assert run(clean, "--max-series", "19").exit_code == 0
    assert findings(clean, "--max-series", "18") == [
        ("error", "too-many-series", None, None,
         "http_request_duration_seconds: 11 series",
         "19 series in total, over --max-series 18"),
    ]  # fmt: skip
    assert run(clean, "--max-series", "18").exit_code == 1
    assert findings(clean, "--cardinality-threshold", "2") == [
        ("error", "high-cardinality-label", "http_requests_total", "status", "200",
         "3 distinct values, over the threshold of 2"),
    ]  # fmt: skip


def test_human_output() -> None:
    result = run(str(DATA / "label-looks-like-path.prom"))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{DATA / 'label-looks-like-path.prom'}: prometheus, 1 family, 4 series",
        "series  type       family: labels (distinct values)",
        "     4  counter    http_requests_total",
        "                   endpoint=4  method=1",
        "error   label-looks-like-path  http_requests_total{endpoint}",
        '        3 of 4 values look like raw URL paths, e.g. endpoint="/users/42"',
        "        hint: record the route template (/users/{user_id}), never the raw path or "
        "query string",
        "1 error, 0 warnings: fails --fail-on error",
    ]


def test_json_document_is_stable() -> None:
    result = run(str(DATA / "label-looks-like-path.prom"), "--json", "--max-series", "500")
    assert result.exit_code == 1
    assert json.loads(result.output) == {
        "version": 1,
        "source": str(DATA / "label-looks-like-path.prom"),
        "format": "prometheus",
        "settings": {"cardinality_threshold": 100, "max_series": 500, "fail_on": "error"},
        "summary": {
            "families": 1,
            "series": 4,
            "errors": 1,
            "warnings": 0,
            "info": 0,
            "failed": True,
        },
        "families": [
            {
                "name": "http_requests_total",
                "type": "counter",
                "help": True,
                "series": 4,
                "labels": [{"name": "endpoint", "values": 4}, {"name": "method", "values": 1}],
            }
        ],
        "findings": [
            {
                "rule": "label-looks-like-path",
                "severity": "error",
                "family": "http_requests_total",
                "label": "endpoint",
                "example": "/users/42",
                "message": "3 of 4 values look like raw URL paths",
                "hint": RULES["label-looks-like-path"][1],
            }
        ],
    }


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["/no/such/file"], None, "cannot read /no/such/file: No such file or directory"),
        ([str(DATA)], None, f"cannot read {DATA}: Is a directory"),
        (["-"], "", "stdin holds no metrics"),
        (["-"], "<html><body>Not metrics</body></html>", "stdin is not valid Prometheus text"),
        (["-"], "# TYPE x counter\nx_total 1\n# EOF\nmore", "stdin is not valid Prometheus"),
        (["ftp://127.0.0.1/m"], None, "ftp://127.0.0.1/m: only http:// and https:// URLs"),
    ],
)
def test_unusable_input_exits_2_with_a_message(
    args: list[str], stdin: str | None, message: str
) -> None:
    result = run(*args, stdin=stdin)
    assert result.exit_code == 2
    assert result.output.startswith(f"otel-kit check: {message}"), result.output
    assert "Traceback" not in result.output


def test_usage_errors_exit_2() -> None:
    assert run(str(DATA / "clean.prom"), "--fail-on", "fatal").exit_code == 2
    assert run(str(DATA / "clean.prom"), "--max-series", "0").exit_code == 2


# --- real outputs: plain prometheus_client, the brief's seed app --------------------------


def plain_prometheus_client() -> CollectorRegistry:
    """A prometheus_client app done right, with the default process/platform/GC collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    labels = ["method", "route", "status"]
    requests = Counter("http_requests_total", "HTTP requests.", labels, registry=registry)
    latency = Histogram("http_request_duration_seconds", "Latency.", ["route"], registry=registry)
    progress = Gauge("http_requests_in_progress", "In progress.", ["method"], registry=registry)
    for user in range(500):
        requests.labels("GET", "/users/{user_id}", "200" if user % 10 else "404").inc()
        latency.labels("/users/{user_id}").observe(user / 1000)
    progress.labels("GET").set(2)
    return registry


@pytest.mark.parametrize("openmetrics", [False, True])
def test_plain_prometheus_client_app_is_clean(openmetrics: bool) -> None:
    registry = plain_prometheus_client()
    exposition = (generate_openmetrics if openmetrics else generate_latest)(registry).decode()
    result = run("-", "--json", "--fail-on", "warning", stdin=exposition)
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["findings"] == []
    assert document["format"] == ("openmetrics" if openmetrics else "prometheus")
    families = {f["name"]: f for f in document["families"]}
    assert families["http_requests_total"]["labels"] == [
        {"name": "status", "values": 2}, {"name": "method", "values": 1},
        {"name": "route", "values": 1},
    ]  # fmt: skip


TRACE = {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"}


def test_exemplars_over_openmetrics_128_characters_in_a_real_exposition() -> None:
    """prometheus_client's OpenMetrics output with exemplars (it refuses long ones itself), one
    bucket's then given a 141-character label set as a client without the check writes it."""
    registry = CollectorRegistry()
    latency = Histogram(
        "request_duration_seconds", "Request duration.", registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    )  # fmt: skip
    latency.observe(0.007, exemplar=TRACE)  # 8+32+7+16 = 63 characters: within the limit
    latency.observe(0.3, exemplar=TRACE)
    text = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]
    under = '# {span_id="b7ad6b7169203331",trace_id="0af7651916cd43dd8448eb211c80319c"}'
    assert text.count(under) == 2
    over = under.replace("}", ',customer="' + "x" * 70 + '"}')
    text = text.replace(f'le="0.5"}} 2.0 {under}', f'le="0.5"}} 2.0 {over}')
    assert text.count(over) == 1
    assert findings("-", stdin=text) == [
        ("error", "exemplar-labels-too-long", "request_duration_seconds", None,
         '{span_id="b7ad6b7169203331",trace_id="0…',
         "1 exemplar over 128 characters of labels (141 the longest)"),
    ]  # fmt: skip
    result = run("-", "--json", stdin=text.replace(over, under))
    assert result.exit_code == 0 and json.loads(result.output)["findings"] == []


def test_otel_kits_own_exemplars_pass(make_handle: MakeHandle) -> None:
    """otel-kit's OpenMetrics output with exemplars on a histogram's buckets and a counter."""
    handle = make_handle()
    meter = handle.meter_provider.get_meter("shop")
    totals = meter.create_histogram("order.total", unit="dollars")
    orders = meter.create_counter("orders.created")
    with (
        recorded_spans() as (provider, _),
        provider.get_tracer("shop").start_as_current_span("checkout"),
    ):
        totals.record(42, {"payment_method": "card"})
        orders.add(1, {"payment_method": "card"})
    text = handle.render(openmetrics=True).decode()
    assert text.count(" # {") == 2
    rules = {finding[1] for finding in findings("-", stdin=text)}
    assert not {"exemplar-labels-too-long", "exemplar-not-allowed"} & rules


def test_the_briefs_seed_app_is_caught() -> None:
    """The product brief's own prometheus_client code: raw paths and full URLs in labels."""
    registry = CollectorRegistry()
    request_count = Counter(
        "http_requests_total", "Total HTTP requests", ["method", "endpoint", "status"],
        registry=registry,
    )  # fmt: skip
    request_latency = Histogram(
        "http_request_duration_seconds", "HTTP request latency", ["endpoint"],
        buckets=[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registry=registry,
    )  # fmt: skip
    active_requests = Gauge(
        "http_requests_in_progress", "HTTP requests currently in progress", ["endpoint"],
        registry=registry,
    )  # fmt: skip
    external = Counter(
        "external_api_requests_total", "External API requests", ["service", "endpoint", "status"],
        registry=registry,
    )  # fmt: skip
    Gauge("active_users", "Currently active users", registry=registry).set(3)
    Histogram(
        "order_total_dollars", "Order total in dollars",
        buckets=[10, 25, 50, 100, 250, 500, 1000], registry=registry,
    ).observe(60)  # fmt: skip
    for user_id in range(1, 151):  # the middleware's endpoint = request.url.path
        endpoint = f"/users/{user_id}"
        request_count.labels("GET", endpoint, "200").inc()
        request_latency.labels(endpoint).observe(0.01)
        active_requests.labels(endpoint).set(0)
    for order in (17, 18):
        url = f"https://payments.example.com/v1/charges?order={order}"
        external.labels("payments", url, "200").inc()
    got = findings("-", stdin=generate_latest(registry).decode())
    path, cardinality = "label-looks-like-path", "high-cardinality-label"
    assert [f[:5] for f in got] == [
        ("error", cardinality, "http_requests_total", "endpoint", "/users/1"),
        ("error", path, "http_requests_total", "endpoint", "/users/1"),
        ("error", cardinality, "http_request_duration_seconds", "endpoint", "/users/1"),
        ("error", path, "http_request_duration_seconds", "endpoint", "/users/1"),
        ("error", cardinality, "http_requests_in_progress", "endpoint", "/users/1"),
        ("error", path, "http_requests_in_progress", "endpoint", "/users/1"),
        ("error", path, "external_api_requests_total", "endpoint",
         "https://payments.example.com/v1/charges…"),
    ]  # fmt: skip
    assert got[1][5] == "150 of 150 values look like raw URL paths"
