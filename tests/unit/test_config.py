"""Settings: precedence, parsing, and errors that name the setting, the value and the rule."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from otel_kit import ConfigError, setup_metrics
from otel_kit._pipeline import build_resource
from otel_kit.catalogue import DEFAULT_DURATION_BUCKETS
from otel_kit.cli._app import app
from otel_kit.config import SettingKeywords, Settings, load_settings, setting_docs
from otel_kit.generate._readme import README, with_settings_table
from tests.handles import MakeHandle


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


def test_empty_env_vars_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_KIT_SERVICE_NAME", "")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-spec")
    for name in ("OTEL_EXPORTER_PROMETHEUS_PORT", "OTEL_METRICS_EXPORTER", "OTEL_SDK_DISABLED"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.service_name == "from-spec"
    assert settings.prometheus_port is None
    assert settings.metrics_exporter == ("prometheus",)
    assert settings.sdk_disabled is False


def test_resource_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "service.name=env-name,service.version=9,team=payments"
    )
    resource = build_resource(load_settings({"deployment_environment": "prod"}))
    attributes = dict(resource.attributes)
    assert attributes["service.name"] == "env-name"
    assert attributes["service.version"] == "9"
    assert attributes["team"] == "payments"
    assert attributes["deployment.environment.name"] == "prod"  # semconv >= 1.27's name
    assert "deployment.environment" not in attributes
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
    ({"prometheus_port": "http"}, "OTEL_EXPORTER_PROMETHEUS_PORT", "0 to 65535"),
    ({"prometheus_port": "-1"}, "OTEL_EXPORTER_PROMETHEUS_PORT", "0 to 65535"),
    ({"prometheus_host": "not a host"}, "OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0"),
    ({"prometheus_host": "-bad.example"}, "OTEL_EXPORTER_PROMETHEUS_HOST", "host name or IP"),
    ({"prometheus_host": ""}, "OTEL_EXPORTER_PROMETHEUS_HOST", "host name or IP"),
    ({"metrics_path": "metrics"}, "OTEL_KIT_METRICS_PATH", "starting with '/'"),
    ({"metrics_path": "/metrics?x=1"}, "OTEL_KIT_METRICS_PATH", "no query"),
    ({"cardinality_limit": 0}, "OTEL_KIT_CARDINALITY_LIMIT", "from 1 to 10000000"),
    ({"cardinality_limit": "2.5"}, "OTEL_KIT_CARDINALITY_LIMIT", "from 1 to 10000000"),
    ({"export_interval_ms": 5}, "OTEL_METRIC_EXPORT_INTERVAL", "from 100 to 86400000"),
    ({"export_interval_ms": "1m"}, "OTEL_METRIC_EXPORT_INTERVAL", "milliseconds"),
    ({"otlp_timeout_ms": "10s"}, "OTEL_EXPORTER_OTLP_TIMEOUT", "from 100 to 600000"),
    ({"otlp_endpoint": "localhost:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT", "http:// or https://"),
    ({"otlp_metrics_endpoint": "http://:4318"}, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "host"),
    ({"otlp_protocol": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf, grpc"),
    ({"sdk_disabled": "yes"}, "OTEL_SDK_DISABLED", "allowed: true, false"),
    ({"peer_services": "db.internal"}, "OTEL_KIT_PEER_SERVICES", "key=value"),
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


@pytest.mark.parametrize(("kwargs", "setting", "rule"), BAD)
def test_otel_kit_run_exits_2_with_the_same_message(
    kwargs: dict[str, Any], setting: str, rule: str
) -> None:
    """`otel-kit run` validates before starting anything and says which option was wrong."""
    [(field, bad)] = kwargs.items()
    text = ",".join(map(str, bad)) if isinstance(bad, list) else str(bad)
    with pytest.raises(ConfigError) as error:
        load_settings({field: text})
    flag = "--" + field.replace("_", "-")
    result = CliRunner().invoke(app, ["run", flag, text, "python", "-c", "pass"])
    assert result.exit_code == 2
    assert f"otel-kit run: {error.value} (from {flag})" in result.stderr
    assert rule in result.stderr


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


@given(
    field=st.sampled_from(sorted(Settings.model_fields)),
    text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
)
def test_any_text_for_any_setting_is_accepted_or_named_in_one_clear_error(
    field: str, text: str
) -> None:
    """Environment variables are text: whatever they hold, the parser either gives a value or
    raises ConfigError naming that setting (never another exception, never a traceback)."""
    try:
        load_settings({field: text})
    except ConfigError as error:
        assert str(error).startswith(f"invalid setting {field} / OTEL_KIT_{field.upper()}")


@given(st.integers(-(10**6), 10**6))
def test_port_parser_accepts_exactly_the_tcp_range(port: int) -> None:
    for given_as in (port, f" {port} "):
        if 0 <= port <= 65535:
            assert load_settings({"prometheus_port": given_as}).prometheus_port == port
        else:
            with pytest.raises(ConfigError, match="from 0 to 65535"):
                load_settings({"prometheus_port": given_as})


@given(
    st.one_of(
        st.ip_addresses(),
        st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{2,8}){0,3}", fullmatch=True),
    )
)
def test_host_parser_accepts_ip_addresses_and_host_names(host: object) -> None:
    assert load_settings({"prometheus_host": str(host)}).prometheus_host == str(host)


@given(st.sampled_from(["true", "TRUE", "True", "false", "False", " false ", ""]))
def test_boolean_parser_follows_the_otel_spec(text: str) -> None:
    assert load_settings({"sdk_disabled": text}).sdk_disabled is (text.strip().lower() == "true")


async def test_sdk_disabled_leaves_the_app_untouched(
    monkeypatch: pytest.MonkeyPatch, make_handle: MakeHandle
) -> None:
    from fastapi import FastAPI

    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    app = FastAPI()

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    handle = make_handle(app)
    assert handle.settings.metrics_exporter == ("none",)
    assert handle.registry is None
    assert app.user_middleware == []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/ping")).json() == "pong"
        assert (await client.get("/metrics")).status_code == 404


def test_every_setting_says_what_it_does_and_has_its_own_env_var() -> None:
    for doc in setting_docs():
        assert doc.description, f"{doc.name}: no description= in its Field"
        assert doc.env[0] == f"OTEL_KIT_{doc.name.upper()}", doc.name
        assert [name for name in doc.env if name.startswith("OTEL_KIT_")] == [doc.env[0]]


def test_setting_keywords_name_every_setting_in_order() -> None:
    assert list(SettingKeywords.__annotations__) == list(Settings.model_fields)


def test_readme_settings_table_is_the_generated_one() -> None:
    text = README.read_text()
    assert text == with_settings_table(text), (
        "README.md's settings table is stale: run .venv/bin/python -m otel_kit.generate._readme"
    )
