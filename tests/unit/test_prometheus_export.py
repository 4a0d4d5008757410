"""OTel data -> Prometheus exposition: names, units, types, scope labels, label collisions, and
no crash on what it cannot show. The expected names are those of Prometheus' otlptranslator
(v1.0.0, the translation of the Collector 0.161 and Prometheus 3.16), checked end to end
against both in tests/integration/test_prometheus_otlp.py."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import metrics
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import Histogram
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from starlette.applications import Starlette

from otel_kit import setup_metrics
from otel_kit.catalogue import prometheus_label, prometheus_name, unit_suffix
from otel_kit.config import ConfigError, load_settings
from tests.exposition import samples, series, value
from tests.handles import MakeHandle

# (name, unit, kind) -> name; kind: c = monotonic sum, u = up-down counter, g = gauge, h =
# histogram. `1` gives _ratio on gauges only; the unit word is not added twice.
NAMES = [
    ("http.server.request.duration", "s", "h", "http_server_request_duration_seconds"),
    ("http.server.active_requests", "{request}", "u", "http_server_active_requests"),
    ("cache.requests", "{request}", "c", "cache_requests_total"),
    ("http.server.request.body.size", "By", "h", "http_server_request_body_size_bytes"),
    ("jobs.done_total", "", "c", "jobs_done_total"),
    ("jobs.total.done", "", "c", "jobs_done_total"),
    ("cpu.utilization", "1", "g", "cpu_utilization_ratio"),
    ("cpu.utilization", "1", "u", "cpu_utilization"),
    ("x", "1", "c", "x_total"),
    ("disk.ratio", "1", "g", "disk_ratio"),
    ("9lives", "", "u", "_9lives"),
    ("a..b__c", "", "u", "a_b_c"),
    ("seconds.spent", "s", "c", "seconds_spent_total"),
    ("t", "us", "h", "t_microseconds"),
    ("t", "ns", "h", "t_nanoseconds"),
    ("t", "min", "u", "t_minutes"),
    ("t", "h", "u", "t_hours"),
    ("t", "d", "u", "t_days"),
    ("m", "KBy", "u", "m_kilobytes"),
    ("m", "MBy", "u", "m_megabytes"),
    ("m", "GBy", "u", "m_gigabytes"),
    ("m", "TBy", "u", "m_terabytes"),
    ("m", "KiBy", "u", "m_kibibytes"),
    ("m", "MiBy", "u", "m_mebibytes"),
    ("m", "GiBy", "u", "m_gibibytes"),
    ("m", "TiBy", "u", "m_tibibytes"),
    ("net.io", "By/s", "g", "net_io_bytes_per_second"),
    ("speed", "m/s", "g", "speed_meters_per_second"),
    ("work", "By/m", "c", "work_bytes_per_minute_total"),
    ("arrivals", "{request}/s", "g", "arrivals_per_second"),
    ("arrivals", "1/s", "c", "arrivals_per_second_total"),
    ("temperature", "Cel", "g", "temperature_celsius"),
    ("clock", "Hz", "g", "clock_hertz"),
    ("power", "W", "g", "power_watts"),
    ("load", "%", "g", "load_percent"),
    ("odd", "foo bar", "g", "odd_foo_bar"),
    ("...", "", "g", ""),  # nothing left: not exported
]


@pytest.mark.parametrize(("name", "unit", "kind", "expected"), NAMES)
def test_prometheus_names(name: str, unit: str, kind: str, expected: str) -> None:
    got = prometheus_name(name, unit, monotonic_sum=kind == "c", gauge=kind == "g")
    assert got == expected


STRATEGY_NAMES = {
    # strategy: (counter foo.bar in By, gauge cpu.util in 1, label http.route)
    "UnderscoreEscapingWithSuffixes": ("foo_bar_bytes_total", "cpu_util_ratio", "http_route"),
    "UnderscoreEscapingWithoutSuffixes": ("foo_bar", "cpu_util", "http_route"),
    "NoUTF8EscapingWithSuffixes": ("foo.bar_bytes_total", "cpu.util_ratio", "http.route"),
    "NoTranslation": ("foo.bar", "cpu.util", "http.route"),
}


@pytest.mark.parametrize("strategy", sorted(STRATEGY_NAMES))
def test_names_per_translation_strategy(strategy: str) -> None:
    counter, gauge, label = STRATEGY_NAMES[strategy]
    assert prometheus_name("foo.bar", "By", monotonic_sum=True, strategy=strategy) == counter
    assert prometheus_name("cpu.util", "1", gauge=True, strategy=strategy) == gauge
    assert prometheus_label("http.route", strategy) == label


def test_units_and_label_names() -> None:
    assert [unit_suffix(u) for u in ("s", "By/s", "{request}/s", "1", "{x}", "%")] == [
        "seconds",
        "bytes_per_second",
        "per_second",
        "",
        "",
        "percent",
    ]
    # otlptranslator's label namer with the Collector's defaults
    assert {
        key: prometheus_label(key)
        for key in ("http.response.status_code", "1st", "_x", "a..b", "a__b", "trailing__", "ü")
    } == {
        "http.response.status_code": "http_response_status_code",
        "1st": "key_1st",
        "_x": "key_x",
        "a..b": "a_b",
        "a__b": "a_b",
        "trailing__": "trailing_",
        "ü": "key_",
    }
    assert prometheus_label("") == ""


@pytest.mark.usefixtures("global_metrics")
def test_types_and_label_values() -> None:
    handle = setup_metrics(Starlette())  # served on an app nothing calls: no metrics port
    meter = metrics.get_meter("t")
    meter.create_counter("events", unit="{event}").add(3, {"ok": True, "tags": ("a", "b")})
    meter.create_up_down_counter("queue.depth").add(-2)
    text = handle.render().decode()
    assert "# TYPE events_total counter" in text
    assert value(text, "events_total", ok="true", tags='["a","b"]') == 3  # JSON, as the Collector
    assert "# TYPE queue_depth gauge" in text
    assert value(text, "queue_depth") == -2


def test_scope_labels_by_default(make_handle: MakeHandle) -> None:
    """The meter's name, version and schema URL, and its attributes, on every series (spec)."""
    handle = make_handle()
    provider = handle.meter_provider
    meter = provider.get_meter(
        "shop.orders", "2.1", "https://opentelemetry.io/schemas/1.30.0", {"team": "shop"}
    )
    meter.create_counter("orders").add(2, {"k": "v"})
    provider.get_meter("bare").create_counter("orders").add(5, {"k": "v"})
    text = handle.render().decode()
    assert sorted(
        (sorted(s.items()), v)
        for (n, ls), v in samples(text, scope=True).items()
        for s in [dict(ls)]
        if n == "orders_total"
    ) == [
        ([("k", "v"), ("otel_scope_name", "bare")], 5.0),
        (
            [
                ("k", "v"),
                ("otel_scope_name", "shop.orders"),
                ("otel_scope_schema_url", "https://opentelemetry.io/schemas/1.30.0"),
                ("otel_scope_team", "shop"),
                ("otel_scope_version", "2.1"),
            ],
            2.0,
        ),
    ]
    (info,) = series(text, "target_info", scope=True)
    assert not any(k.startswith("otel_scope_") for k in info)  # the resource's only


def test_same_name_from_two_meters_never_duplicates(
    make_handle: MakeHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's reproduction: two meters, one `dup_requests` counter each, {k: v}."""
    for scope_labels in (True, False):
        handle = make_handle(prometheus_scope_labels=scope_labels)
        provider = handle.meter_provider
        provider.get_meter("a").create_counter("dup_requests").add(1, {"k": "v"})
        provider.get_meter("b").create_counter("dup_requests").add(2, {"k": "v"})
        with caplog.at_level(logging.WARNING, logger="otel_kit"):
            text = handle.render().decode()
        found = {
            ls: v for (n, ls), v in samples(text, scope=True).items() if n == "dup_requests_total"
        }  # samples() fails on a duplicate series
        if scope_labels:
            assert found == {
                frozenset({("k", "v"), ("otel_scope_name", "a")}): 1,
                frozenset({("k", "v"), ("otel_scope_name", "b")}): 2,
            }
        else:  # one family, the first meter's series, and a warning naming the other
            assert found == {frozenset({("k", "v")}): 1}
            assert text.count("# TYPE dup_requests_total counter") == 1
            assert any("dup_requests" in r.message and "(b)" in r.message for r in caplog.records)


def test_scope_labels_off(make_handle: MakeHandle) -> None:
    handle = make_handle(prometheus_scope_labels=False)
    handle.meter_provider.get_meter("m", "1").create_counter("jobs").add(1)
    assert series(handle.render().decode(), "jobs_total", scope=True) == [{}]


def test_scope_labels_setting(make_handle: MakeHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().prometheus_scope_labels is True
    monkeypatch.setenv("OTEL_KIT_PROMETHEUS_SCOPE_LABELS", "false")
    assert load_settings().prometheus_scope_labels is False
    with pytest.raises(ConfigError, match=r"prometheus_scope_labels.*'sometimes'.*true, false"):
        make_handle(prometheus_scope_labels="sometimes")


def test_colliding_attributes_are_joined(make_handle: MakeHandle) -> None:
    """`a.b` and `a_b` make one label: the values joined with `;`, by the original keys (spec).
    An attribute named like a scope label joins it too."""
    handle = make_handle()
    meter = handle.meter_provider.get_meter("m")
    meter.create_counter("c").add(1, {"a_b": "second", "a.b": "first", "x": "1"})
    meter.create_counter("d").add(1, {"otel.scope.name": "mine"})
    text = handle.render().decode()
    assert series(text, "c_total", scope=True) == [
        {"a_b": "first;second", "x": "1", "otel_scope_name": "m"}
    ]
    assert series(text, "d_total", scope=True) == [{"otel_scope_name": "mine;m"}]


def test_joined_labels_that_meet_another_series_are_served_once(
    make_handle: MakeHandle, caplog: pytest.LogCaptureFixture
) -> None:
    handle = make_handle()
    counter = handle.meter_provider.get_meter("m").create_counter("c")
    counter.add(1, {"a.b": "x;y"})
    counter.add(2, {"a.b": "x", "a_b": "y"})  # the same label set once joined
    with caplog.at_level(logging.WARNING, logger="otel_kit"):
        text = handle.render().decode()
    assert series(text, "c_total") == [{"a_b": "x;y"}]
    assert value(text, "c_total") == 1
    assert any("twice" in r.message for r in caplog.records)


def test_le_attribute_on_a_histogram_keeps_the_buckets(make_handle: MakeHandle) -> None:
    """A user attribute `le` becomes `exported_le` on all the histogram's series, as Prometheus
    renames a target's labels that a scrape would overwrite: the buckets keep their bounds,
    and no point is lost (each `le` value is its own series)."""
    handle = make_handle()
    meter = handle.meter_provider.get_meter("m")
    histogram = meter.create_histogram("h", unit="s", explicit_bucket_boundaries_advisory=[1.0])
    histogram.record(0.5, {"le": "a"})
    histogram.record(2.0, {"le": "b"})
    meter.create_counter("c").add(1, {"le": "kept"})  # only histograms have an le label
    text = handle.render().decode()
    buckets = {
        (labels["exported_le"], labels["le"]): v
        for (n, ls), v in samples(text).items()
        if n == "h_seconds_bucket"
        for labels in [dict(ls)]
    }
    assert buckets == {("a", "1.0"): 1, ("a", "+Inf"): 1, ("b", "1.0"): 0, ("b", "+Inf"): 1}
    assert sorted(map(sorted, (s.items() for s in series(text, "h_seconds_count")))) == [
        [("exported_le", "a")],
        [("exported_le", "b")],
    ]
    assert series(text, "c_total") == [{"le": "kept"}]


def test_units_in_the_exposition(make_handle: MakeHandle) -> None:
    """Through the SDK: the instrument kinds decide `_ratio` and `_total`; UNIT metadata in
    OpenMetrics is the unit word."""
    handle = make_handle()
    meter = handle.meter_provider.get_meter("m")
    meter.create_counter("net.io", unit="By/s").add(1)
    meter.create_up_down_counter("parts", unit="1").add(1)
    meter.create_observable_gauge("share", [lambda _: [Observation(0.5)]], unit="1")
    meter.create_gauge("temp", unit="Cel").set(21.5)
    text = handle.render().decode()
    mine = ("net_io", "parts", "share", "temp")
    assert {n: v for (n, _), v in samples(text).items() if n.startswith(mine)} == {
        "net_io_bytes_per_second_total": 1,
        "parts": 1,
        "share_ratio": 0.5,
        "temp_celsius": 21.5,
    }
    openmetrics = handle.render(openmetrics=True).decode()
    families = text_string_to_metric_families(openmetrics)  # type: ignore[no-untyped-call]
    units = {f.name: f.unit for f in families}
    assert units["net_io_bytes_per_second"] == "bytes_per_second"
    assert units["temp_celsius"] == "celsius"


def test_exponential_histograms_are_skipped_with_a_warning(
    make_handle: MakeHandle, caplog: pytest.LogCaptureFixture
) -> None:
    handle = make_handle()
    # A user-built view on the same provider type: the contrib reader crashes on this.
    provider = handle.meter_provider
    provider._sdk_config.views = (  # type: ignore[attr-defined]
        View(instrument_type=Histogram, aggregation=ExponentialBucketHistogramAggregation()),
    )
    meter = provider.get_meter("exp")
    meter.create_histogram("latency.exp", unit="s").record(0.2)
    meter.create_counter("still.here").add(1)
    with caplog.at_level(logging.WARNING, logger="otel_kit"):
        text = handle.render().decode()
    assert "latency_exp" not in text
    assert value(text, "still_here_total") == 1
    assert any("latency.exp" in r.message for r in caplog.records)
    assert series(text, "target_info")


# prometheus-client 0.23.1 and newer escape names by content negotiation
UTF8_NAMES = hasattr(openmetrics_exposition, "ALLOWUTF8")


@pytest.mark.skipif(not UTF8_NAMES, reason="this prometheus-client has no UTF-8 names")
def test_translation_strategy_with_content_negotiation(make_handle: MakeHandle) -> None:
    """UTF-8 names only to a scraper that asks for them (escaping=allow-utf-8); escaped to
    underscores for any other (the spec's table for `foo.bar` in By)."""
    handle = make_handle(prometheus_translation_strategy="NoUTF8EscapingWithSuffixes")
    handle.meter_provider.get_meter("m").create_counter("foo.bar", unit="By").add(1, {"a.b": "1"})
    assert handle.registry is not None
    utf8 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8"
    lines = {}
    for accept in (utf8, "application/openmetrics-text;version=1.0.0", ""):
        encode, _ = choose_encoder(accept)
        text = encode(handle.registry).decode()
        lines[accept] = [line for line in text.splitlines() if "foo" in line and line[0] != "#"]
    assert lines == {
        utf8: ['{"foo.bar_bytes_total","a.b"="1",otel_scope_name="m"} 1.0'],
        "application/openmetrics-text;version=1.0.0": [
            'foo_bar_bytes_total{a_b="1",otel_scope_name="m"} 1.0'
        ],
        "": ['foo_bar_bytes_total{a_b="1",otel_scope_name="m"} 1.0'],
    }


def test_translation_strategy_setting(make_handle: MakeHandle) -> None:
    handle = make_handle(prometheus_translation_strategy="underscoreescapingwithoutsuffixes")
    handle.meter_provider.get_meter("m").create_counter("jobs.done").add(1)  # any case ^
    assert value(handle.render().decode(), "jobs_done") == 1  # no _total
    if UTF8_NAMES:
        handle = make_handle(prometheus_translation_strategy="NoTranslation")
        handle.meter_provider.get_meter("m").create_counter("jobs.done").add(1)
        assert value(handle.render().decode(), "jobs_done") == 1  # escaped: not asked for UTF-8
    else:
        with pytest.raises(ConfigError, match=r"'NoTranslation': UTF-8 names need prometheus-cl"):
            make_handle(prometheus_translation_strategy="NoTranslation")
    with pytest.raises(
        ConfigError, match=r"prometheus_translation_strategy.*'Dots'.*NoTranslation"
    ):
        make_handle(prometheus_translation_strategy="Dots")
