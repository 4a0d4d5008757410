"""Grafana's side of the dashboards: the typed panels they are written in, the query shapes a
panel shows (with their legends), the `job`/`instance`/`route` variables every selector filters
on, and the JSON model Grafana imports.

Small typed builders rather than Grafana's foundation SDK: the SDK needs Python >= 3.11 (this
package supports 3.10), is alpha, and its epoch-stamped versions make a plain install resolve to
Grafana 10.1 types; the few fields a dashboard needs fit in the dataclasses below.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from otel_kit.generate._promql import (
    HTTP_COUNT,
    ROUTE,
    TARGET_INFO,
    histogram_quantile,
    or_zero,
    rate_sum,
    ratio,
    selector,
    sum_by,
)

__all__ = ["RATE", "ROUTE_VARS", "VARS", "Dashboard", "Panel", "Query"]
__all__ += ["gauges", "layout", "legend", "quantiles", "rates", "ratios", "stat", "to_json"]
__all__ += ["shows_exemplars", "trace_link", "zero_filled"]

RATE = "$__rate_interval"
_JOB, _INSTANCE = 'job=~"$job"', 'instance=~"$instance"'
VARS = (_JOB, _INSTANCE)
ROUTE_VARS = (*VARS, f'{ROUTE}=~"$route"')


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = "__auto"


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str  # a Grafana unit id: reqps, ops, s, percentunit, bytes, short
    queries: tuple[Query, ...]
    question: str  # Grafana's panel description; docs/dashboards.md lists it too
    kind: Literal["timeseries", "stat"] = "timeseries"
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()  # (from value, colour) above green


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    route_variable: bool = False


def legend(by: Sequence[str], before: str = "", after: str = "") -> str:
    """Grafana's legend format: the `by` labels' values, between `before` and `after`."""
    parts = [before, *(f"{{{{{name}}}}}" for name in by), after]
    return " ".join(part for part in parts if part) or "__auto"


def rates(metric: str, matchers: Sequence[str], *by: str, suffix: str = "") -> tuple[Query, ...]:
    return (Query(rate_sum(metric, matchers, RATE, by), legend(by, after=suffix)),)


def ratios(
    metric: str, part: Sequence[str], matchers: Sequence[str], *by: str
) -> tuple[Query, ...]:
    return (Query(ratio(metric, part, matchers, RATE, by), legend(by)),)


def quantiles(
    histogram: str, matchers: Sequence[str], *by: str, qs: Sequence[float] = (0.5, 0.95, 0.99)
) -> tuple[Query, ...]:
    return tuple(
        Query(
            histogram_quantile(q, histogram, matchers, RATE, by),
            legend(by, before=f"p{q * 100:g}"),
        )
        for q in qs
    )


def gauges(metric: str, matchers: Sequence[str], *by: str, suffix: str = "") -> tuple[Query, ...]:
    return (Query(sum_by(metric, matchers, by), legend(by, after=suffix)),)


def zero_filled(
    queries: tuple[Query, ...], like: str, matchers: Sequence[str], *by: str
) -> tuple[Query, ...]:
    """A counter that exists from its first event on: 0 per `like` series until then."""
    return tuple(Query(or_zero(q.expr, sum_by(like, matchers, by)), q.legend) for q in queries)


def stat(
    title: str,
    unit: str,
    queries: tuple[Query, ...],
    question: str,
    *,
    width: int = 4,
    thresholds: tuple[tuple[float, str], ...] = (),
) -> Panel:
    return Panel(title, unit, queries, question, "stat", width, 4, thresholds)


_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Where a latency panel's exemplar links to: a tracing data source (Tempo's type; Jaeger's works
# the same once the variable's type is changed), picked per dashboard like the Prometheus one.
TRACING = "tracing_datasource"
TRACE_ID = "trace_id"  # the exemplar label otel-kit writes (OpenMetrics, OTLP)


def shows_exemplars(panel: Panel) -> bool:
    """A latency graph: quantiles of a histogram, whose buckets carry the exemplars."""
    return panel.kind == "timeseries" and all(
        q.expr.startswith("histogram_quantile(") for q in panel.queries
    )


def trace_link() -> dict[str, str]:
    """The data link of an exemplar: its trace in Explore, on the `tracing_datasource`."""
    query = f"${{__data.fields.{TRACE_ID}}}"
    pane = {
        "datasource": f"${{{TRACING}}}",
        "queries": [
            {
                "refId": "A",
                "datasource": {"uid": f"${{{TRACING}}}"},
                "query": query,
                "queryType": "traceql",
            }
        ],
        "range": {"from": "now-1h", "to": "now"},
    }
    panes = json.dumps({"trace": pane}, separators=(",", ":"))
    # Grafana interpolates ${...} before following the link: those stay unencoded.
    return {
        "title": f"Trace {query}",
        "url": "/explore?schemaVersion=1&panes=" + quote(panes, safe="${}_.:,"),
    }


def _variable(name: str, title: str, query: str) -> dict[str, Any]:
    # allValue ".*" also matches series without the label (unmatched routes have no http_route).
    return {
        "name": name,
        "label": title,
        "type": "query",
        "datasource": _DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _variables(dashboard: Dashboard) -> list[dict[str, Any]]:
    instances = f"label_values({selector(TARGET_INFO, (_JOB,))}, instance)"
    variables = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
        },
        _variable("job", "Service (job)", f"label_values({TARGET_INFO}, job)"),
        _variable("instance", "Instance", instances),
    ]
    if dashboard.route_variable:
        routes = f"label_values({selector(HTTP_COUNT, VARS)}, {ROUTE})"
        variables.append(_variable("route", "Route", routes))
    if any(map(shows_exemplars, dashboard.panels)):
        tracing = {"name": TRACING, "label": "Traces", "type": "datasource", "query": "tempo"}
        variables.append({**tracing, "current": {}})
    return variables


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": colour, "value": value} for value, colour in panel.thresholds]
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "thresholds": {"mode": "absolute", "steps": steps},
    }
    if panel.unit == "percentunit":
        defaults["min"] = 0
    options: dict[str, Any]
    if panel.kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
        }
    else:
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {"fillOpacity": 10, "showPoints": "never"}
        if shows_exemplars(panel):
            defaults["links"] = [trace_link()]
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    # Exemplars on the first query only: every quantile reads the same buckets, so the same ones.
    exemplars = [shows_exemplars(panel) and i == 0 for i in range(len(panel.queries))]
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.question,
        "datasource": _DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": _DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                "range": True,
                **({"exemplar": True} if exemplars[i] else {}),
            }
            for i, query in enumerate(panel.queries)
        ],
    }


def layout(dashboard: Dashboard) -> list[tuple[Panel, int, int]]:
    """Each panel with its grid position: left to right, wrapping at Grafana's 24 columns."""
    placed, x, y, row_height = [], 0, 0, 0
    for panel in dashboard.panels:
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        placed.append((panel, x, y))
        x, row_height = x + panel.width, max(row_height, panel.height)
    return placed


def to_json(dashboard: Dashboard) -> dict[str, Any]:
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["otel-kit"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "links": [
            {
                "title": "otel-kit",
                "type": "dashboards",
                "tags": ["otel-kit"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": _variables(dashboard)},
        "panels": [_panel(p, i, x, y) for i, (p, x, y) in enumerate(layout(dashboard), 1)],
    }
