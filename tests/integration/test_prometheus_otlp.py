"""Prometheus 3's own OTLP receiver under each of its translation strategies: the shop pushes to
it, and the names are what docs/deploy.md says. Only the default (UnderscoreEscapingWithSuffixes)
gives the names of direct and collector mode, which the dashboards and rules use; the whole set
of dashboards and rules runs on it in tests/integration/test_prometheus_rules.py."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from otel_kit.generate import _promql
from tests import go_tools
from tests.integration.prometheus_server import prometheus, wait_for
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
