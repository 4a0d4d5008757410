"""Dashboards and rules: committed files equal the generators' output, every name comes from the
catalogue (or the real exposition), the SLO spec is validated, promtool checks and unit-tests
the rules, and the CLI writes the same files."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from otel_kit import catalogue
from otel_kit.cli import dashboard as dashboard_cli
from otel_kit.cli import rules as rules_cli
from otel_kit.generate import _promql, dashboards, rules
from tests.exposition import samples
from tests.handles import MakeHandle

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "collector" / "grafana" / "dashboards"
RULES_DIR = ROOT / "collector" / "rules"
REGENERATE = (
    "run: otel-kit dashboard -o collector/grafana/dashboards; otel-kit rules -o collector/rules"
)
UNITS = {"reqps", "ops", "s", "percentunit", "bytes", "short"}
FILTERS = ('job=~"$job"', 'instance=~"$instance"')


def panel_exprs() -> list[str]:
    return [q.expr for d in dashboards.DASHBOARDS for p in d.panels for q in p.queries]


def defined_rules(
    slo: rules.SLO | None = None,
) -> list[rules.Recording | rules.Alert]:
    files = rules.generate(slo or rules.SLO(), rules.Thresholds())
    return [rule for groups in files.values() for group in groups for rule in group.rules]


def alerts(slo: rules.SLO | None = None) -> list[rules.Alert]:
    return [rule for rule in defined_rules(slo) if isinstance(rule, rules.Alert)]


def rule_exprs(slo: rules.SLO | None = None) -> list[str]:
    exprs = [rule.expr for rule in defined_rules(slo)]
    return exprs + [expr for alert in alerts(slo) for expr in alert.inputs]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset"}
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}")


def metric_names(expr: str) -> list[str]:
    """The metric names an expression selects (every identifier that is not a function,
    keyword, label or duration)."""
    text = _GROUPING.sub(" ", _STRING.sub('""', expr))
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    names = []
    for match in _IDENT.finditer(text):
        follows = text[match.end() :].lstrip()[:1]
        if (
            follows != "("
            and match.group() not in _KEYWORDS
            and not text[match.start() - 1 : match.start()].isdigit()
        ):
            names.append(match.group())
    return names


def exposition_names(make_handle: MakeHandle) -> set[str]:
    """Names in the real exposition of a fresh setup: runtime series and target_info."""
    return {name for name, _labels in samples(make_handle().render().decode())}


def catalogue_names() -> set[str]:
    names = set()
    for spec_name in catalogue.__all__:
        spec = getattr(catalogue, spec_name)
        if isinstance(spec, catalogue.MetricSpec):
            base = spec.prometheus
            suffixes = ("_bucket", "_count", "_sum") if spec.kind == "histogram" else ("",)
            names |= {base + suffix for suffix in suffixes}
    return names


# --- committed files are the generators' output


def test_committed_dashboards_are_generated() -> None:
    committed = {path.name: path.read_text() for path in DASHBOARD_DIR.glob("*.json")}
    assert committed == dashboards.render(), REGENERATE


def test_committed_rules_are_generated() -> None:
    committed = {path.name: path.read_text() for path in RULES_DIR.glob("*.yml")}
    assert committed == rules.render(), REGENERATE


# --- names


def test_every_metric_name_is_in_the_catalogue_or_the_real_exposition(
    make_handle: MakeHandle,
) -> None:
    real = exposition_names(make_handle)
    assert {"target_info", _promql.PROCESS_CPU_TIME, _promql.GC_COLLECTIONS} <= real
    runtime = {
        _promql.PROCESS_CPU_TIME,
        _promql.PROCESS_MEMORY_USAGE,
        _promql.PROCESS_MEMORY_VIRTUAL,
        _promql.PROCESS_THREADS,
        _promql.PROCESS_FDS,
        _promql.GC_COLLECTIONS,
        _promql.GC_COLLECTED,
        _promql.GC_UNCOLLECTABLE,
    }
    assert runtime <= real  # the runtime names the dashboards use are what the kit emits
    recorded = {rule.record for rule in defined_rules() if isinstance(rule, rules.Recording)}
    allowed = catalogue_names() | real | {"up"}
    # the Collector's own: tests/integration/test_collector.py and test_prometheus_rules.py
    collector_own = {_promql.OTELCOL_REFUSED, _promql.OTELCOL_SEND_FAILED, _promql.OTELCOL_SENT}
    used_by_dashboards = {name for expr in panel_exprs() for name in metric_names(expr)}
    used_by_rules = {name for expr in rule_exprs() for name in metric_names(expr)}
    assert used_by_dashboards - allowed == set()
    assert used_by_rules - allowed - recorded == collector_own
    # and the extraction works: the names it finds are the ones a reader sees
    assert "http_server_request_duration_seconds_bucket" in used_by_dashboards
    assert {"up", "target_info", "job:http_server_request_error:ratio_rate1h"} <= used_by_rules


def test_metric_names_finds_selectors_not_labels_or_functions() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, job) (rate(a_bucket{le="0.25", x=~"y"}[5m])))'
        ' / on (job) group_left (z) b and absent(c{job="d"}) or 0 * e'
    )
    assert metric_names(expr) == ["a_bucket", "b", "c", "e"]


def test_every_dashboard_selector_filters_job_and_instance() -> None:
    for expr in panel_exprs():
        selectors = _SELECTOR.findall(expr)
        assert len(selectors) == len(metric_names(expr)), expr  # no bare metric name
        for _name, matchers in selectors:
            assert all(f in matchers for f in FILTERS), expr
            assert "$__rate_interval" in expr or "rate(" not in expr


def test_dashboard_json() -> None:
    for dashboard in dashboards.DASHBOARDS:
        model = json.loads(dashboards.render()[f"{dashboard.uid}.json"])
        variables = {v["name"]: v for v in model["templating"]["list"]}
        expected = {"datasource", "job", "instance"} | (
            {"route"} if dashboard.route_variable else set()
        )
        tracing = {"tracing_datasource"} if dashboard is not dashboards.RUNTIME else set()
        assert set(variables) == expected | tracing
        expected -= tracing
        assert variables["job"]["query"] == "label_values(target_info, job)"
        assert variables["instance"]["query"] == 'label_values(target_info{job=~"$job"}, instance)'
        for name in expected - {"datasource"}:
            assert variables[name]["allValue"] == ".*"  # also matches series without the label
        cells: set[tuple[int, int]] = set()
        for panel in model["panels"]:
            assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, panel["title"]
            assert panel["description"].endswith("?"), panel["title"]
            assert [t["refId"] for t in panel["targets"]] == ["A", "B", "C"][
                : len(panel["targets"])
            ]
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
            area = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not area & cells, f"{panel['title']} overlaps another panel"
            cells |= area
    assert [d.uid for d in dashboards.DASHBOARDS] == [
        "otel-kit-service",
        "otel-kit-database",
        "otel-kit-cache",
        "otel-kit-outbound",
        "otel-kit-runtime",
    ]
    assert dashboards.SERVICE.route_variable


def test_latency_panels_show_exemplars_with_a_trace_link() -> None:
    shown: dict[str, list[str]] = {}
    for dashboard in dashboards.DASHBOARDS:
        model = json.loads(dashboards.render()[f"{dashboard.uid}.json"])
        variables = {v["name"]: v for v in model["templating"]["list"]}
        for panel in model["panels"]:
            flags = [t.get("exemplar", False) for t in panel["targets"]]
            links = panel["fieldConfig"]["defaults"].get("links")
            if not any(flags):
                assert links is None, panel["title"]
                continue
            shown.setdefault(dashboard.uid, []).append(panel["title"])
            assert flags == [True, False, False]  # once: every quantile reads the same buckets
            assert all(
                t["expr"].startswith("histogram_quantile(") and "_seconds_bucket{" in t["expr"]
                for t in panel["targets"]
            )
            (link,) = links
            assert link["title"] == "Trace ${__data.fields.trace_id}"
            url = urllib.parse.urlsplit(link["url"])
            assert url.path == "/explore"
            (panes,) = urllib.parse.parse_qs(url.query)["panes"]
            (pane,) = json.loads(panes).values()
            assert pane["datasource"] == "${tracing_datasource}"
            (query,) = pane["queries"]
            assert query["datasource"] == {"uid": "${tracing_datasource}"}
            assert query["query"] == "${__data.fields.trace_id}"
            assert variables["tracing_datasource"]["type"] == "datasource"
    assert shown == {
        "otel-kit-service": ["Latency p50 / p95 / p99 by route"],
        "otel-kit-database": [
            "Query latency p50 / p95 / p99 by operation",
            "Connection wait time p50 / p95 / p99",
        ],
        "otel-kit-cache": ["Redis latency p50 / p95 / p99 by command"],
        "otel-kit-outbound": ["Call latency p50 / p95 / p99 by server"],
    }


def test_label_helper_rejects_an_attribute_the_metric_lacks() -> None:
    assert _promql.label(catalogue.HTTP_SERVER_REQUEST_DURATION, "http.route") == "http_route"
    with pytest.raises(
        ValueError, match=re.escape("http.server.request.duration has no attribute 'db.namespace'")
    ):
        _promql.label(catalogue.HTTP_SERVER_REQUEST_DURATION, "db.namespace")


def imported_names(module: object) -> set[str]:
    """Each `from a import b` of a module's source as "a" and "a.b"."""
    tree = ast.parse(Path(str(getattr(module, "__file__", ""))).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_dashboards_and_rules_share_promql_and_never_import_each_other() -> None:
    for module, other in ((dashboards, rules), (rules, dashboards)):
        names = imported_names(module)
        assert _promql.__name__ in names
        assert other.__name__ not in names, f"{module.__name__} imports {other.__name__}"


# --- rules


def test_rule_names_labels_and_annotations() -> None:
    records = [rule.record for rule in defined_rules() if isinstance(rule, rules.Recording)]
    assert len(records) == len(set(records))
    for record in records:
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", record), record
    assert "job:http_server_requests:rate5m" in records
    for alert in alerts():
        assert alert.severity in ("page", "ticket")
        assert alert.summary and alert.description and alert.runbook, alert.name
        assert alert.inputs
    burn = [a for a in alerts() if a.name == "OtelKitAvailabilityBudgetBurn"]
    assert [(a.labels["long_window"], a.labels["short_window"], a.severity) for a in burn] == [
        ("1h", "5m", "page"),
        ("6h", "30m", "page"),
        ("1d", "2h", "ticket"),
        ("3d", "6h", "ticket"),
    ]
    assert burn[0].expr == (
        "job:http_server_request_error:ratio_rate1h > (14.4 * 0.001)"
        " and job:http_server_request_error:ratio_rate5m > (14.4 * 0.001)"
    )
    assert {a.name for a in alerts()} == {
        "OtelKitAvailabilityBudgetBurn",
        "OtelKitLatencyBudgetBurn",
        "OtelKitHighErrorRatio",
        "OtelKitHighLatency",
        "OtelKitDBPoolSaturated",
        "OtelKitOutboundErrors",
        "OtelKitTargetDown",
        "OtelKitPushStopped",
        "OtelKitMetricsAbsent",
        "OtelKitCollectorRefusing",
        "OtelKitCollectorExportFailing",
    }


def test_slo_for_one_service_filters_every_selector() -> None:
    slo = rules.SLO(service="shop", availability_objective=0.99, latency_objective=0.95)
    exprs = [rule.expr for rule in defined_rules(slo) if isinstance(rule, rules.Recording)]
    exprs += [
        a.expr
        for a in alerts(slo)
        if a.name in ("OtelKitTargetDown", "OtelKitPushStopped", "OtelKitMetricsAbsent")
    ]
    for expr in exprs:
        for _name, matchers in _SELECTOR.findall(expr):
            assert 'job="shop"' in matchers, expr
        assert len(_SELECTOR.findall(expr)) == len(metric_names(expr)), expr
    burn = next(a for a in alerts(slo) if a.name == "OtelKitLatencyBudgetBurn")
    assert "(14.4 * 0.05)" in burn.expr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"latency_threshold": 0.3},
            "latency_threshold 0.3 s is not a histogram bucket boundary, so no series counts the "
            "requests faster than it; use one of 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, "
            "0.5, 0.75, 1, 2.5, 5, 7.5, 10 or add it to the buckets (OTEL_KIT_DURATION_BUCKETS)",
        ),
        ({"availability_objective": 1.0}, "availability_objective must be between 0 and 1"),
        ({"latency_objective": 0}, "latency_objective must be between 0 and 1"),
        ({"service": ""}, "service must be a job name or None"),
        ({"service": "{{ $value }}"}, "without {{ or }} (alert templates would run them)"),
        ({"service": "shop }}"}, "without {{ or }}"),
        ({"service": "shop\n"}, "service must be a job name or None (every job): printable"),
    ],
)
def test_slo_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        rules.SLO(**kwargs)


def test_thresholds_validation() -> None:
    with pytest.raises(ValueError, match="pool_saturation must be a share in"):
        rules.Thresholds(pool_saturation=90)


def slow_ratio_exprs(slo: rules.SLO) -> list[str]:
    return [
        rule.expr
        for rule in defined_rules(slo)
        if isinstance(rule, rules.Recording) and ":http_server_request_slow:" in rule.record
    ]


def test_latency_threshold_selects_its_bucket() -> None:
    exprs = slow_ratio_exprs(rules.SLO(latency_threshold=0.3, buckets=(0.1, 0.3, 1.0)))
    assert len(exprs) == 7
    assert all('_bucket{le="0.3"}' in expr for expr in exprs)
    # 1.0 is "1.0" from Python exporters, "1" from the Collector (Go): both match
    assert all(
        r'_bucket{le=~"1|1\\.0"}' in expr
        for expr in slow_ratio_exprs(rules.SLO(latency_threshold=1))
    )


# --- promtool


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is installed by .ci/run (Debian package prometheus)"
    return path


def run(*args: str | Path) -> str:
    result = subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_checks_the_committed_rules_and_a_custom_slo(tmp_path: Path) -> None:
    output = run("check", "rules", *sorted(RULES_DIR.glob("*.yml")))
    assert "SUCCESS: 17 rules found" in output and "SUCCESS: 20 rules found" in output
    slo = rules.SLO(service='sh"op', latency_threshold=1.0, availability_objective=0.95)
    run("check", "rules", *rules.write(tmp_path, slo))


def test_promtool_unit_tests_fire_and_do_not_fire() -> None:
    tests = sorted((RULES_DIR / "tests").glob("*.yml"))
    output = run("test", "rules", *tests)
    assert output.count("SUCCESS") == len(tests) == 3
    # each alert is expected firing somewhere and expected silent somewhere
    text = "\n".join(path.read_text() for path in tests)
    blocks = re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", text)
    for alert in {a.name for a in alerts()}:
        assert (alert, "") in blocks, f"{alert} is never expected to fire"
        assert (alert, " []") in blocks, f"{alert} is never expected to stay silent"


def test_le_spellings_under_promtool(tmp_path: Path) -> None:
    """A Collector writes le="1", Python exporters le="1.0": the latency SLI reads both."""
    rules.write(tmp_path, rules.SLO(latency_threshold=1.0))
    count, bucket = (
        "http_server_request_duration_seconds_count",
        "http_server_request_duration_seconds_bucket",
    )
    test = {
        "rule_files": ["otel-kit-recording.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'{count}{{job="go"}}', "values": "0+10x10"},
                    {"series": f'{bucket}{{job="go", le="1"}}', "values": "0+5x10"},
                    {"series": f'{count}{{job="py"}}', "values": "0+20x10"},
                    {"series": f'{bucket}{{job="py", le="1.0"}}', "values": "0+15x10"},
                    {"series": f'{bucket}{{job="py", le="10.0"}}', "values": "0+20x10"},
                ],
                "promql_expr_test": [
                    {
                        "expr": "round(job:http_server_request_slow:ratio_rate5m, 0.001)",
                        "eval_time": "10m",
                        "exp_samples": [
                            {
                                "labels": '{job="go"}',
                                "value": 0.5,
                            },
                            {
                                "labels": '{job="py"}',
                                "value": 0.25,
                            },
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(json.dumps(test))  # JSON is YAML
    run("test", "rules", tmp_path / "test.yml")


# --- CLI


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """A fresh app holding only the commands under test."""

    dashboard_cli.register(app)
    rules_cli.register(app)
    return app


def test_cli_dashboard_writes_the_committed_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["dashboard", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = {path.name: path.read_text() for path in tmp_path.iterdir()}
    assert written == {path.name: path.read_text() for path in DASHBOARD_DIR.glob("*.json")}
    assert result.output.splitlines() == [str(tmp_path / name) for name in dashboards.render()]


def test_cli_rules_defaults_write_the_committed_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["rules", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = {path.name: path.read_text() for path in tmp_path.iterdir()}
    assert written == {path.name: path.read_text() for path in RULES_DIR.glob("*.yml")}


def test_cli_rules_with_an_slo(tmp_path: Path) -> None:
    args = ["rules", "-o", str(tmp_path), "--service", "shop", "--availability-objective", "0.99"]
    args += ["--latency-threshold", "0.5", "--latency-objective", "0.95", "--error-ratio", "0.1"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "otel-kit-alerts.yml").read_text()
    assert "expr: job:http_server_request_error:ratio_rate1h > (14.4 * 0.01) and" in text
    assert "expr: job:http_server_request_slow:ratio_rate6h > (6 * 0.05) and" in text
    assert "expr: job:http_server_request_error:ratio_rate5m > 0.1\n" in text
    assert 'expr: absent(target_info{job="shop"})' in text
    recording = (tmp_path / "otel-kit-recording.yml").read_text()
    assert 'http_server_request_duration_seconds_bucket{job="shop", le="0.5"}[1h]' in recording


def test_cli_rules_rejects_a_threshold_that_is_no_bucket(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["rules", "-o", str(tmp_path), "--latency-threshold", "0.3"])
    assert result.exit_code == 2
    assert (
        "otel-kit rules: latency_threshold 0.3 s is not a histogram bucket boundary"
        in result.output
    )
    assert list(tmp_path.iterdir()) == []


def test_cli_rules_reads_the_configured_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_KIT_DURATION_BUCKETS", "0.1,0.3,1")
    result = CliRunner().invoke(cli(), ["rules", "-o", str(tmp_path), "--latency-threshold", "0.3"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli(), ["rules", "-o", str(tmp_path), "--buckets", "0.2,x"])
    assert result.exit_code == 2
    assert "--buckets '0.2,x': expected comma-separated numbers" in result.output


# --- docs


def test_docs_show_every_panel_query_and_alert() -> None:
    text = (ROOT / "docs" / "dashboards.md").read_text()
    for dashboard in dashboards.DASHBOARDS:
        assert dashboard.title in text
        for panel in dashboard.panels:
            assert panel.title in text and panel.question in text, panel.title
            for query in panel.queries:
                assert query.expr in text, query.expr
    for alert in alerts():
        assert alert.name in text
