"""Dashboards and rules for a Prometheus translation strategy: the default-name queries
rewritten to the names Prometheus stores, quoted where UTF-8 (checked against a real Prometheus 3
in tests/integration/test_prometheus_otlp.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from otel_kit.cli._app import app
from otel_kit.generate import dashboards, rules
from otel_kit.generate._strategy import rewrite

UTF8 = "NoUTF8EscapingWithSuffixes"
QUERIES = [
    (
        'sum by (http_route) (rate(http_server_request_duration_seconds_count{job=~"$job", '
        'http_route=~"$route"}[5m]))',
        'sum by ("http.route") (rate({"http.server.request.duration_seconds_count", '
        'job=~"$job", "http.route"=~"$route"}[5m]))',
        'sum by (http_route) (rate(http_server_request_duration_count{job=~"$job", '
        'http_route=~"$route"}[5m]))',
    ),
    (
        "histogram_quantile(0.95, sum by (le, http_route) "
        "(rate(http_server_request_duration_seconds_bucket[5m])))",
        'histogram_quantile(0.95, sum by (le, "http.route") '
        '(rate({"http.server.request.duration_seconds_bucket"}[5m])))',
        "histogram_quantile(0.95, sum by (le, http_route) "
        "(rate(http_server_request_duration_bucket[5m])))",
    ),
    (
        'sum(rate(cache_requests_total{cache_result="hit"}[5m])) / count(target_info{job="a"})',
        'sum(rate({"cache.requests_total", "cache.result"="hit"}[5m])) / '
        'count(target_info{job="a"})',
        'sum(rate(cache_requests{cache_result="hit"}[5m])) / count(target_info{job="a"})',
    ),
]


@pytest.mark.parametrize(("default", "utf8", "without_suffixes"), QUERIES)
def test_queries_are_renamed(default: str, utf8: str, without_suffixes: str) -> None:
    assert rewrite(UTF8).query(default) == utf8
    assert rewrite("UnderscoreEscapingWithoutSuffixes").query(default) == without_suffixes
    assert rewrite("UnderscoreEscapingWithSuffixes").query(default) == default


def test_legends_templates_and_variables() -> None:
    names = rewrite(UTF8)
    assert names.legend("p95 {{http_route}} {{job}}") == "p95 {{http.route}} {{job}}"
    assert names.template("{{ $labels.job }} {{ $labels.http_route }}") == (
        '{{ $labels.job }} {{ (index $labels "http.route") }}'
    )
    assert names.variable(
        "label_values(http_server_request_duration_seconds_count, http_route)"
    ) == ('label_values({"http.server.request.duration_seconds_count"}, http.route)')


def test_generated_files_per_strategy() -> None:
    assert rules.render() == rules.render(strategy="UnderscoreEscapingWithSuffixes")
    text = "".join(rules.render(strategy=UTF8).values())
    assert "Names: Prometheus translation strategy NoUTF8EscapingWithSuffixes." in text
    assert "http_server_request_duration_seconds_count" not in text
    models = [json.loads(t) for t in dashboards.render(UTF8).values()]
    exprs = [t["expr"] for m in models for p in m["panels"] for t in p["targets"]]
    assert all("http_route" not in e and "http_server_request" not in e for e in exprs)


def test_cli_option(tmp_path: Path) -> None:
    for command in ("rules", "dashboard"):
        done = CliRunner().invoke(
            app, [command, "-o", str(tmp_path), "--translation-strategy", "nOTRANSLATION"]
        )
        assert done.exit_code == 0, done.output
        bad = CliRunner().invoke(app, [command, "--translation-strategy", "Dots"])
        assert bad.exit_code == 2 and "'Dots'" in bad.output
    assert (
        '"http.server.request.duration_count"' in (tmp_path / "otel-kit-recording.yml").read_text()
    )
