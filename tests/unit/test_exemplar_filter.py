"""OTEL_METRICS_EXEMPLAR_FILTER (issue 15): read by otel-kit, so a bad value is a ConfigError
naming the setting and the allowed values, not the SDK's bare ValueError at provider start."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum
from opentelemetry.sdk.resources import Resource

from otel_kit import ConfigError
from otel_kit._pipeline import _EXEMPLAR_FILTERS, _provider
from otel_kit._setting_rules import EXEMPLAR_FILTERS
from otel_kit._setup import MetricsHandle
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
    provider = _provider(settings, Resource.create({}), [reader])
    provider.get_meter("shop").create_counter("orders").add(1)  # no span: trace_based keeps none
    data = reader.get_metrics_data()
    assert data is not None
    point = data.resource_metrics[0].scope_metrics[0].metrics[0].data
    assert isinstance(point, Sum)
    assert len(point.data_points[0].exemplars) == exemplars
    provider.shutdown()
