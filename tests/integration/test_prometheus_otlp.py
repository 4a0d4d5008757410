"""Prometheus 3's own OTLP receiver under each of its translation strategies, against direct
mode and the real Collector: the shop pushes to it, and the names are what docs/deploy.md says
(only the default, UnderscoreEscapingWithSuffixes, gives the names of the committed dashboards
and rules; tests/integration/test_prometheus_rules.py runs them all on it); user metrics in the
spec's units get the same series in every mode; direct mode with the same
prometheus_translation_strategy gives the series of OTLP under that strategy; and the dashboards
and rules generated for a UTF-8 strategy work on a Prometheus 3 scraping such names."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider

from otel_kit.generate import _promql, dashboards, rules
from tests import go_tools
from tests.handles import MakeHandle
from tests.integration.otelcol import COLLECTOR, Ports, collector, shipped_prometheus_config
from tests.integration.processes import free_port, server
from tests.integration.prometheus_server import prometheus, query, wait_for
from tests.integration.test_collector import requests, shop

pytestmark = pytest.mark.integration

STRATEGIES = {
    # strategy: (the request-duration count, the active-requests gauge, the route label)
    "UnderscoreEscapingWithSuffixes": (
        "http_server_request_duration_seconds_count",
        "http_server_active_requests",
        "http_route",
    ),
    "UnderscoreEscapingWithoutSuffixes": (
        "http_server_request_duration_count",
        "http_server_active_requests",
        "http_route",
    ),
    "NoUTF8EscapingWithSuffixes": (
        "http.server.request.duration_seconds_count",
        "http.server.active_requests",
        "http.route",
    ),
    "NoTranslation": (
        "http.server.request.duration_count",
        "http.server.active_requests",
        "http.route",
    ),
}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_translation_strategy_names(tmp_path: Path, strategy: str) -> None:
    count, gauge, route = STRATEGIES[strategy]
    config = f"otlp:\n  translation_strategy: {strategy}\n"
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    with (
        prometheus(
            config, prom_dir, go_tools.prometheus3(), ["--web.enable-otlp-receiver"]
        ) as prom,
        shop(tmp_path, f"{prom}/api/v1/otlp") as client,
    ):
        requests(client, 7)
        (series,) = wait_for(prom, f'{{__name__="{count}", "{route}"="/users/{{user_id}}"}} == 7')
        assert series["metric"]["job"] == "shop"
        names = set(httpx.get(f"{prom}/api/v1/label/__name__/values", timeout=10).json()["data"])
        assert gauge in names
        # the catalogue's names (dashboards, rules) under the default strategy only
        catalogue = {_promql.HTTP_COUNT, _promql.ACTIVE}
        assert (catalogue <= names) == (strategy == "UnderscoreEscapingWithSuffixes"), names


# User metrics in units of the spec's table (and rates, annotations, `1` on each kind): the
# names Prometheus' OTLP receiver gives them (UnderscoreEscapingWithSuffixes), which the
# Collector and direct mode must give too.
UNIT_METRICS = {
    # (instrument, name, unit): Prometheus name of its count/value series
    ("counter", "t.count", "us"): "t_count_microseconds_total",
    ("counter", "t.spent", "min"): "t_spent_minutes_total",
    ("counter", "t.uptime", "h"): "t_uptime_hours_total",
    ("counter", "t.age", "d"): "t_age_days_total",
    ("updown", "m.kb", "KBy"): "m_kb_kilobytes",
    ("updown", "m.mb", "MBy"): "m_mb_megabytes",
    ("updown", "m.gb", "GBy"): "m_gb_gigabytes",
    ("updown", "m.tb", "TBy"): "m_tb_terabytes",
    ("updown", "m.kib", "KiBy"): "m_kib_kibibytes",
    ("updown", "m.mib", "MiBy"): "m_mib_mebibytes",
    ("updown", "m.gib", "GiBy"): "m_gib_gibibytes",
    ("updown", "m.tib", "TiBy"): "m_tib_tibibytes",
    ("gauge", "net.io", "By/s"): "net_io_bytes_per_second",
    ("gauge", "room.temperature", "Cel"): "room_temperature_celsius",
    ("gauge", "cpu.clock", "Hz"): "cpu_clock_hertz",
    ("gauge", "disk.used", "%"): "disk_used_percent",
    ("gauge", "cache.fill", "1"): "cache_fill_ratio",
    ("updown", "jobs.share", "1"): "jobs_share",
    ("counter", "jobs.items", "1"): "jobs_items_total",
    ("gauge", "car.speed", "m/s"): "car_speed_meters_per_second",
    ("counter", "arrivals", "{request}/s"): "arrivals_per_second_total",
    ("histogram", "job.duration", "ms"): "job_duration_milliseconds_count",
    ("counter", "seconds.spent", "s"): "seconds_spent_total",
}


TYPED = {"flag": True, "n": 3, "ratio": 1.0, "small": 0.5, "tags": ("a", "b"), "nums": (1.5, 2.0)}
TYPED_LABELS = {"flag": "true", "n": "3", "ratio": "1", "small": "0.5", "tags": '["a","b"]'}
TYPED_LABELS["nums"] = "[1.5,2]"


def record_units(provider: MeterProvider) -> None:
    meter = provider.get_meter("units", "1.0")
    for (kind, name, unit), _ in UNIT_METRICS.items():
        attributes = {"unit.test": unit}
        if kind == "counter":
            meter.create_counter(name, unit=unit).add(2, attributes)
        elif kind == "updown":
            meter.create_up_down_counter(name, unit=unit).add(3, attributes)
        elif kind == "gauge":
            meter.create_gauge(name, unit=unit).set(0.5, attributes)
        else:
            meter.create_histogram(name, unit=unit).record(7, attributes)
    # keys that make one label: joined with ';' by the original keys (spec; Prometheus' OTLP)
    meter.create_counter("collide").add(1, {"a_b": "2", "a.b": "1"})
    # values that are not strings: as the Collector writes them (pcommon's AsString)
    meter.create_counter("typed").add(1, TYPED)


Labels = frozenset[tuple[str, str]]


def units_series(prom: str, job: str) -> set[tuple[str, Labels]]:
    match = f'{{otel_scope_name="units", job="{job}"}}'
    response = httpx.get(f"{prom}/api/v1/series", params={"match[]": match}, timeout=10)
    data = response.json()["data"]
    for labels in data:
        if "le" in labels:  # Python writes le="50.0", Go "50"
            labels["le"] = repr(float(labels["le"]))
    return {
        (labels.pop("__name__"), frozenset(labels.items()))
        for labels in data
        if labels.pop("instance") and labels.pop("job")
    }


def test_user_metric_units_have_the_same_names_in_every_mode(
    tmp_path: Path, make_handle: MakeHandle
) -> None:
    """One Prometheus 3 scrapes a direct /metrics and the real Collector (shipped config), and
    takes OTLP itself (promote_scope_metadata): the same user metrics, each unit named the same
    way, the otel_scope_* labels kept. The Collector drops the metric whose two keys make one
    label (its exporter refuses duplicate label names); the others join them."""
    port = free_port()
    ports = Ports.free()
    config = shipped_prometheus_config(
        collectors=[f"127.0.0.1:{ports.metrics}"], direct={"units-direct": f"127.0.0.1:{port}"}
    )
    config += (
        "otlp:\n  keep_identifying_resource_attributes: true\n  promote_scope_metadata: true\n"
    )
    (tmp_path / "prom").mkdir()
    with (
        collector([COLLECTOR / "otelcol-config.yaml"], tmp_path / "otelcol", ports=ports),
        prometheus(
            config, tmp_path / "prom", go_tools.prometheus3(), ["--web.enable-otlp-receiver"]
        ) as prom,
    ):
        push = {"metrics_exporter": "otlp", "otlp_protocol": "http/protobuf"}
        push |= {"export_interval_ms": 500}
        handles = {
            "units-direct": make_handle(prometheus_port=port, service_name="units-direct"),
            "units-collector": make_handle(
                **push,
                otlp_endpoint=f"http://127.0.0.1:{ports.http}",
                service_name="units-collector",
            ),
            "units-otlp": make_handle(
                **push, otlp_endpoint=f"{prom}/api/v1/otlp", service_name="units-otlp"
            ),
        }
        for handle in handles.values():
            record_units(handle.meter_provider)
        wanted = len(UNIT_METRICS) + 4  # and the histogram's _bucket and _sum, collide, typed
        for job in handles:
            count = wanted - (job == "units-collector")
            expr = (
                f'count(group by (__name__) ({{otel_scope_name="units", job="{job}"}})) == {count}'
            )
            wait_for(prom, expr, timeout=30)
        seen = {job: units_series(prom, job) for job in handles}
    direct = seen["units-direct"]
    names = {name for name, _ in direct}
    assert set(UNIT_METRICS.values()) | {"collide_total"} <= names
    scope = {("otel_scope_name", "units"), ("otel_scope_version", "1.0")}
    assert {labels for name, labels in direct if name == "collide_total"} == {
        frozenset({("a_b", "1;2"), *scope})
    }
    assert all(scope <= labels for _, labels in direct)
    assert {labels for name, labels in direct if name == "typed_total"} == {
        frozenset({*TYPED_LABELS.items(), *scope})
    }
    assert seen["units-otlp"] == direct
    assert seen["units-collector"] == {(n, ls) for n, ls in direct if n != "collide_total"}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_direct_mode_names_as_prometheus_otlp_names_them(
    tmp_path: Path, make_handle: MakeHandle, strategy: str
) -> None:
    """prometheus_translation_strategy: a Prometheus 3 that scrapes /metrics (it asks for
    escaping=allow-utf-8) stores the series its OTLP receiver stores under that
    translation_strategy, UTF-8 names included."""
    port = free_port()
    config = shipped_prometheus_config(direct={"units-direct": f"127.0.0.1:{port}"})
    config += f"otlp:\n  translation_strategy: {strategy}\n  promote_scope_metadata: true\n"
    (tmp_path / "prom").mkdir()
    with prometheus(
        config, tmp_path / "prom", go_tools.prometheus3(), ["--web.enable-otlp-receiver"]
    ) as prom:
        settings = {"prometheus_translation_strategy": strategy}
        handles = {
            "units-direct": make_handle(
                prometheus_port=port, service_name="units-direct", **settings
            ),
            "units-otlp": make_handle(
                metrics_exporter="otlp",
                otlp_protocol="http/protobuf",
                export_interval_ms=500,
                otlp_endpoint=f"{prom}/api/v1/otlp",
                service_name="units-otlp",
                **settings,
            ),
        }
        for handle in handles.values():
            record_units(handle.meter_provider)
        wanted = len(UNIT_METRICS) + 4
        for job in handles:
            selector = f'{{otel_scope_name="units", job="{job}"}}'
            wait_for(prom, f"count(group by (__name__) ({selector})) == {wanted}", timeout=30)
        seen = {job: units_series(prom, job) for job in handles}
    assert seen["units-direct"] == seen["units-otlp"]
    names = {name for name, _ in seen["units-direct"]}
    count, _, route = STRATEGIES[strategy]
    # the request-duration count as the strategy names it, for a user histogram in ms
    expected = (
        count.replace("http_server_request_duration", "job_duration")
        .replace("http.server.request.duration", "job.duration")
        .replace("seconds", "milliseconds")
    )
    assert expected in names, sorted(names)
    label = "unit.test" if "." in route else "unit_test"
    assert all(
        label in dict(ls)
        for n, ls in seen["units-direct"]
        if not n.startswith(("collide", "typed"))
    )


def test_rules_and_dashboards_for_a_utf8_strategy(tmp_path: Path) -> None:
    """`otel-kit rules`/`dashboard --translation-strategy NoUTF8EscapingWithSuffixes`: Prometheus
    3 loads the rules and evaluates each without error while it scrapes the shop serving UTF-8
    names (prometheus_translation_strategy); the request recordings and the service
    dashboard's panels see the shop's traffic under the quoted names."""
    strategy = "NoUTF8EscapingWithSuffixes"
    rules_dir = tmp_path / "rules"
    rules.write(rules_dir, strategy=strategy)
    models = [json.loads(text) for text in dashboards.render(strategy).values()]
    port = free_port()
    config = shipped_prometheus_config(
        sorted(rules_dir.glob("*.yml")), direct={"shop": f"127.0.0.1:{port}"}
    )
    env = {
        "SHOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}",
        "OTEL_KIT_PROMETHEUS_TRANSLATION_STRATEGY": strategy,
    }
    args = ["-m", "uvicorn", "examples.shop.app:app", "--port", str(port), "--log-level", "error"]
    (tmp_path / "prom").mkdir()
    with (
        server(args, port, env) as base,
        prometheus(config, tmp_path / "prom", go_tools.prometheus3()) as prom,
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        requests(client, 7)
        count = '{"http.server.request.duration_seconds_count", "http.route"="/users/{user_id}"}'
        wait_for(prom, f"sum({count}) == 7", timeout=30)
        wait_for(prom, 'job:http_server_request_error:ratio_rate5m{job="shop"}', timeout=30)
        loaded = httpx.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
        evaluated = [rule for group in loaded for rule in group["rules"]]
        assert len(evaluated) == 37
        assert [r["name"] for r in evaluated if r["health"] != "ok"] == []
        p95 = 'job_route:http_server_request_duration_seconds:p95_rate5m{job="shop"}'
        (route,) = wait_for(prom, p95, timeout=30)  # its group may run after the other
        assert route["metric"]["http.route"] == "/users/{user_id}"
        service = next(m for m in models if m["uid"] == "otel-kit-service")
        for panel in service["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "5m").replace("$job", "shop")
                expr = expr.replace("$instance", ".*").replace("$route", ".*")
                result = query(prom, expr)  # a PromQL error fails here
                if panel["title"] in ("Requests/s", "Request rate by route", "In progress"):
                    assert result, (panel["title"], expr)
