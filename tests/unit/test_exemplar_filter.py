"""OTEL_METRICS_EXEMPLAR_FILTER (issue 15): read by otel-kit, so a bad value is a ConfigError
naming the setting and the allowed values, not the SDK's bare ValueError at provider start."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum
from opentelemetry.sdk.resources import Resource

from otel_kit import ConfigError
from otel_kit._pipeline import _EXEMPLAR_FILTERS, _provider
from otel_kit._setting_rules import EXEMPLAR_FILTERS
from otel_kit._setup import MetricsHandle
from otel_kit._user_meter import UserInstruments
from otel_kit.config import load_settings


def test_a_bad_filter_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "sometimes")
    with pytest.raises(ConfigError) as error:
        MetricsHandle.create()
    assert str(error.value) == (
        "invalid setting exemplar_filter / OTEL_KIT_EXEMPLAR_FILTER / "
        "OTEL_METRICS_EXEMPLAR_FILTER = 'sometimes': allowed: trace_based, always_on, always_off"
    )


def test_spec_values_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().exemplar_filter == "trace_based"  # the spec's default
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", " Always_On ")
    assert load_settings().exemplar_filter == "always_on"
    assert load_settings({"exemplar_filter": "always_off"}).exemplar_filter == "always_off"
    assert tuple(_EXEMPLAR_FILTERS) == EXEMPLAR_FILTERS  # every allowed name builds a filter


@pytest.mark.parametrize(("name", "exemplars"), [("always_on", 1), ("always_off", 0)])
def test_the_provider_uses_the_setting(
    name: str, exemplars: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the SDK would read this itself and fail; the provider must take the setting instead
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "not-read")
    settings = load_settings({"exemplar_filter": name})
    reader = InMemoryMetricReader()
    user = UserInstruments(settings.cardinality_limit, settings.exemplar_filter)
    provider = _provider(settings, Resource.create({}), [reader], user)
    # no span: trace_based keeps none; an SDK counter and a user one (otel-kit's, `_user_meter`)
    MeterProvider.get_meter(provider, "sdk").create_counter("orders").add(1)
    provider.get_meter("shop").create_counter("orders").add(1)
    sdk_data = reader.get_metrics_data()
    assert sdk_data is not None
    data = user.merge(sdk_data, Resource.create({}))
    scopes = data.resource_metrics[0].scope_metrics
    assert [scope.scope.name for scope in scopes] == ["sdk", "shop"]
    for scope in scopes:
        point = scope.metrics[0].data
        assert isinstance(point, Sum)
        assert len(point.data_points[0].exemplars) == exemplars
    provider.shutdown()
