"""Settings: precedence, parsing, and errors that name the setting, the value and the rule."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_kit import ConfigError, setup_metrics
from otel_kit.catalogue import DEFAULT_DURATION_BUCKETS
from otel_kit.config import load_settings
from otel_kit.provider import build_resource


def test_defaults() -> None:
    settings = load_settings()
    assert settings.metrics_exporter == ("prometheus",)
    assert settings.metrics_path == "/metrics"
    assert settings.duration_buckets == DEFAULT_DURATION_BUCKETS
    assert settings.cardinality_limit == 2000
    assert settings.prometheus_port is None


def test_argument_beats_kit_env_beats_spec_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-spec")
    assert load_settings().service_name == "from-spec"
    monkeypatch.setenv("OTEL_KIT_SERVICE_NAME", "from-kit")
    assert load_settings().service_name == "from-kit"
    assert load_settings({"service_name": "from-arg"}).service_name == "from-arg"


def test_env_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "Prometheus, console")
    monkeypatch.setenv("OTEL_KIT_DURATION_BUCKETS", "0.1, 0.5,1")
    monkeypatch.setenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "^/healthz$, ^/ready")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "9999")
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "redis,httpx")
    settings = load_settings()
    assert settings.metrics_exporter == ("prometheus", "console")
    assert settings.duration_buckets == (0.1, 0.5, 1.0)
    assert settings.excluded_urls == ("^/healthz$", "^/ready")
    assert settings.prometheus_port == 9999
    assert settings.disabled_instrumentations == ("redis", "httpx")


def test_resource_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "service.name=env-name,service.version=9,team=payments"
    )
    resource = build_resource(load_settings({"deployment_environment": "prod"}))
    attributes = dict(resource.attributes)
    assert attributes["service.name"] == "env-name"
    assert attributes["service.version"] == "9"
    assert attributes["team"] == "payments"
    assert attributes["deployment.environment"] == "prod"
    assert len(str(attributes["service.instance.id"])) == 36
    explicit = build_resource(load_settings({"service_name": "arg-name"}))
    assert explicit.attributes["service.name"] == "arg-name"


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"metrics_exporter": "prom"}, "OTEL_METRICS_EXPORTER", "prometheus, otlp, console, none"),
    ({"metrics_exporter": "none,otlp"}, "OTEL_METRICS_EXPORTER", "cannot be combined"),
    ({"duration_buckets": [1, 0.5]}, "OTEL_KIT_DURATION_BUCKETS", "strictly increasing"),
    ({"duration_buckets": []}, "OTEL_KIT_DURATION_BUCKETS", "non-empty"),
    ({"duration_buckets": "-1,2"}, "OTEL_KIT_DURATION_BUCKETS", ">= 0"),
    ({"duration_buckets": "a,b"}, "OTEL_KIT_DURATION_BUCKETS", "finite numbers"),
    ({"prometheus_port": 70000}, "OTEL_EXPORTER_PROMETHEUS_PORT", "0 to 65535"),
    ({"prometheus_port": "http"}, "OTEL_EXPORTER_PROMETHEUS_PORT", "valid integer"),
    ({"metrics_path": "metrics"}, "OTEL_KIT_METRICS_PATH", "starting with '/'"),
    ({"cardinality_limit": 0}, "OTEL_KIT_CARDINALITY_LIMIT", ">= 1"),
    ({"export_interval_ms": 5}, "OTEL_METRIC_EXPORT_INTERVAL", ">= 100"),
    ({"excluded_urls": "(unclosed"}, "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "regular expression"),
    ({"resource_attributes": "novalue"}, "OTEL_RESOURCE_ATTRIBUTES", "key=value"),
    ({"disabled_instrumentations": "mongo"}, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "redis"),
    ({"service_name": " "}, "OTEL_SERVICE_NAME", "non-empty"),
]


@pytest.mark.parametrize(("kwargs", "setting", "rule"), BAD)
def test_bad_values_name_setting_value_and_rule(
    kwargs: dict[str, Any], setting: str, rule: str
) -> None:
    with pytest.raises(ConfigError) as error:
        setup_metrics(**kwargs)
    message = str(error.value)
    assert setting in message
    assert repr(next(iter(kwargs.values()))) in message
    assert rule in message


def test_bad_env_value_fails_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "jaeger")
    with pytest.raises(ConfigError, match=r"OTEL_METRICS_EXPORTER = 'jaeger': allowed"):
        setup_metrics()


def test_unknown_keyword_lists_allowed_settings() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting.*colour.*allowed: cardinality_limit"):
        setup_metrics(colour="blue")


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=30))
def test_bucket_parser_accepts_exactly_increasing_lists(bounds: list[float]) -> None:
    text = ",".join(repr(b) for b in bounds)
    increasing = all(a < b for a, b in itertools.pairwise(bounds))
    if increasing:
        assert load_settings({"duration_buckets": text}).duration_buckets == tuple(bounds)
    else:
        with pytest.raises(ConfigError, match="strictly increasing"):
            load_settings({"duration_buckets": text})


def test_bad_otlp_headers_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer s3cret,broken")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "OTEL_EXPORTER_OTLP_HEADERS = <redacted>" in str(error.value)
    assert "s3cret" not in str(error.value)
