"""Prometheus recording and alerting rules generated from the metric catalogue and an SLO spec.

Recording rules follow `level:metric:operations` (the level lists the labels kept, e.g.
`job_route:http_server_requests:rate5m`). The SLO alerts are the multi-window, multi-burn-rate
alerts of Google's SRE workbook over a 30-day budget: they page when the budget burns fast and
open a ticket when it burns slowly. The other alerts are tickets that say where to look (route,
pool, dependency, target). Alerts read the recorded series, so load both files.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from otel_kit.catalogue import DEFAULT_DURATION_BUCKETS
from otel_kit.generate._files import write_files
from otel_kit.generate._promql import (
    CACHE,
    CLIENT_COUNT,
    CLIENT_FAILURES,
    HIT,
    HTTP_BUCKET,
    HTTP_COUNT,
    HTTP_DURATION,
    LOOKUPS,
    OTELCOL_REFUSED,
    OTELCOL_SEND_FAILED,
    OTELCOL_SENT,
    POOL,
    ROUTE,
    SERVER,
    SERVER_ERRORS,
    TARGET_INFO,
    UP,
    histogram_quantile,
    pool_saturation,
    rate_sum,
    ratio,
    selector,
)
from otel_kit.generate._strategy import DEFAULT, Rewrite, rewrite

__all__ = ["BURN_WINDOWS", "SLO", "Alert", "BurnWindow", "Group", "Recording", "Thresholds"]
__all__ += ["generate", "render", "write"]

Severity = Literal["page", "ticket"]
# In an alert's annotations the service name is template text: {{ }} would run as a template.
_UNSAFE_IN_RULES = re.compile(r"^$|\{\{|\}\}")


@dataclass(frozen=True)
class SLO:
    """What the service promises over 30 days. `service` is the `job` label (None: every job,
    each judged on its own). The latency SLI counts requests in the histogram bucket
    `le=latency_threshold`, so the threshold must be one of `buckets`."""

    service: str | None = None
    availability_objective: float = 0.999
    latency_threshold: float = 0.25
    latency_objective: float = 0.99
    buckets: tuple[float, ...] = DEFAULT_DURATION_BUCKETS

    def __post_init__(self) -> None:
        for name in ("availability_objective", "latency_objective"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must be between 0 and 1, e.g. 0.999; got {value!r}")
        if self.service is not None and (
            not self.service.isprintable() or _UNSAFE_IN_RULES.search(self.service)
        ):
            raise ValueError(
                "service must be a job name or None (every job): printable, without {{ or }} "
                f"(alert templates would run them); got {self.service!r}"
            )
        if not any(math.isclose(b, self.latency_threshold) for b in self.buckets):
            bounds = ", ".join(f"{b:g}" for b in self.buckets)
            raise ValueError(
                f"latency_threshold {self.latency_threshold:g} s is not a histogram bucket "
                f"boundary, so no series counts the requests faster than it; use one of "
                f"{bounds} or add it to the buckets (OTEL_KIT_DURATION_BUCKETS)"
            )


@dataclass(frozen=True)
class Thresholds:
    """Where the cause alerts (tickets) start; each must hold for the alert's `for`."""

    error_ratio: float = 0.05  # share of 5xx per job
    pool_saturation: float = 0.9  # used / max connections per pool
    outbound_error_ratio: float = 0.1  # share of failed calls per dependency

    def __post_init__(self) -> None:
        for name in ("error_ratio", "pool_saturation", "outbound_error_ratio"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be a share in (0, 1], e.g. 0.05; got {value!r}")


@dataclass(frozen=True)
class BurnWindow:
    long: str
    short: str
    factor: float  # burn rate: how many times faster than "exactly on budget"
    severity: Severity


# SRE workbook, table 5-8: 2% of the budget in 1h, 5% in 6h (page); 10% in 1d, in 3d (ticket).
BURN_WINDOWS = (
    BurnWindow("1h", "5m", 14.4, "page"),
    BurnWindow("6h", "30m", 6, "page"),
    BurnWindow("1d", "2h", 3, "ticket"),
    BurnWindow("3d", "6h", 1, "ticket"),
)
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


@dataclass(frozen=True)
class Recording:
    record: str
    expr: str


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    severity: Severity
    summary: str
    description: str
    runbook: str
    inputs: tuple[str, ...]  # the series the condition reads: present while the service runs
    for_: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    collector_only: bool = False  # reads the Collector's own otelcol_* series


@dataclass(frozen=True)
class Group:
    name: str
    rules: tuple[Recording | Alert, ...]


def _le(bound: float) -> str:
    """Matcher for one bucket: Python exporters write le="1.0", Go ones (the Collector) "1"."""
    forms = sorted({repr(bound), f"{bound:g}"})
    if len(forms) == 1:
        return f'le="{forms[0]}"'
    return 'le=~"{}"'.format("|".join(re.escape(form) for form in forms).replace("\\", "\\\\"))


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.6g}%"


def _burn(kind: str, window: str) -> str:
    return f"job:http_server_request_{kind}:ratio_rate{window}"


# Recorded series the cause alerts read.
_P95 = f"job_route:{HTTP_DURATION}:p95_rate5m"
_POOL_USED = "instance_pool:db_client_connection_used:ratio"
_OUTBOUND_FAILED = "job_server:http_client_request_failed:ratio_rate5m"


def _job(slo: SLO) -> tuple[str, ...]:
    """The matchers of the SLO's service: none for every job."""
    return (f"job={json.dumps(slo.service)}",) if slo.service else ()


def recordings(slo: SLO) -> tuple[Group, ...]:
    m = _job(slo)
    threshold = next(b for b in slo.buckets if math.isclose(b, slo.latency_threshold))
    fast = (*m, _le(threshold))

    def slow(w: str) -> str:
        by = ("job",)
        return f"1 - ({rate_sum(HTTP_BUCKET, fast, w, by)} / {rate_sum(HTTP_COUNT, m, w, by)})"

    return (
        Group(
            "otel-kit-http",
            (
                Recording(
                    "job:http_server_requests:rate5m", rate_sum(HTTP_COUNT, m, "5m", ("job",))
                ),
                Recording(
                    "job_route:http_server_requests:rate5m",
                    rate_sum(HTTP_COUNT, m, "5m", ("job", ROUTE)),
                ),
                Recording(_P95, histogram_quantile(0.95, HTTP_DURATION, m, "5m", ("job", ROUTE))),
            ),
        ),
        Group(
            "otel-kit-slo-availability",
            tuple(
                Recording(_burn("error", w), ratio(HTTP_COUNT, (SERVER_ERRORS,), m, w, ("job",)))
                for w in SLO_WINDOWS
            ),
        ),
        Group(
            "otel-kit-slo-latency",
            tuple(Recording(_burn("slow", w), slow(w)) for w in SLO_WINDOWS),
        ),
        Group(
            "otel-kit-dependencies",
            (
                Recording(
                    "job_cache:cache_requests_hit:ratio_rate5m",
                    ratio(LOOKUPS, (HIT,), m, "5m", ("job", CACHE)),
                ),
                Recording(_POOL_USED, pool_saturation(m, ("job", "instance", POOL))),
                Recording(
                    _OUTBOUND_FAILED,
                    ratio(CLIENT_COUNT, CLIENT_FAILURES, m, "5m", ("job", *SERVER)),
                ),
            ),
        ),
    )


def _burn_alerts(slo: SLO, kind: Literal["availability", "latency"]) -> tuple[Alert, ...]:
    if kind == "availability":
        series, objective, what = "error", slo.availability_objective, "failed (5xx)"
        runbook = (
            "Open the otel-kit Service overview dashboard for the job: 'Error ratio by route' "
            "and 'Errors by type' show which route fails and why; check the Database, Cache and "
            "Outbound dashboards for a failing dependency, and recent deploys. Roll back or shed "
            "the failing route; the alert clears when the short window is back under the burn rate."
        )
    else:
        series, objective = "slow", slo.latency_objective
        what = f"took longer than {slo.latency_threshold:g} s"
        runbook = (
            "Open the otel-kit Service overview dashboard: 'Latency p50 / p95 / p99 by route' "
            "shows the slow route and 'Requests in progress' whether requests queue; the Database "
            "(pool saturation, wait time, query latency), Cache and Outbound dashboards show a "
            "slow dependency; the Runtime dashboard shows CPU saturation or GC pauses."
        )
    budget = f"{1 - objective:.6g}"
    alerts = []
    for w in BURN_WINDOWS:
        condition = f"{w.factor:g} * {budget}"
        alerts.append(
            Alert(
                name=f"OtelKit{kind.capitalize()}BudgetBurn",
                expr=f"{_burn(series, w.long)} > ({condition})"
                f" and {_burn(series, w.short)} > ({condition})",
                severity=w.severity,
                labels={"slo": kind, "long_window": w.long, "short_window": w.short},
                summary=f"{{{{ $labels.job }}}} burns its {kind} error budget over "
                f"{w.factor:g}x the sustainable rate ({w.long}/{w.short})",
                description=f"{{{{ $value | humanizePercentage }}}} of requests {what} over the "
                f"last {w.long}, and still over the last {w.short}: over {w.factor:g}x the "
                f"{_percent(1 - objective)} budget of the {_percent(objective)} {kind} objective. "
                f"At this rate the 30-day budget lasts {30 / w.factor:.3g} days.",
                runbook=runbook,
                inputs=(_burn(series, w.long), _burn(series, w.short)),
            )
        )
    return tuple(alerts)


def alerts(slo: SLO, thresholds: Thresholds) -> tuple[Group, ...]:
    m = _job(slo)
    up, info = selector(UP, m), selector(TARGET_INFO, m)
    return (
        Group("otel-kit-slo", _burn_alerts(slo, "availability") + _burn_alerts(slo, "latency")),
        Group(
            "otel-kit-causes",
            (
                Alert(
                    name="OtelKitHighErrorRatio",
                    expr=f"{_burn('error', '5m')} > {thresholds.error_ratio:g}",
                    for_="5m",
                    severity="ticket",
                    summary="{{ $labels.job }} answers {{ $value | humanizePercentage }} of "
                    "requests with a 5xx",
                    description=f"More than {_percent(thresholds.error_ratio)} of the requests of "
                    "{{ $labels.job }} failed with a 5xx over the last 5 minutes, for 5 minutes.",
                    runbook="Service overview dashboard: 'Error ratio by route' and 'Errors by "
                    "type' name the failing route and exception; the application logs for that "
                    "exception give the cause. Check recent deploys and dependencies.",
                    inputs=(_burn("error", "5m"),),
                ),
                Alert(
                    name="OtelKitHighLatency",
                    expr=f"{_P95} > {slo.latency_threshold:g}",
                    for_="10m",
                    severity="ticket",
                    summary="p95 latency of {{ $labels.job }} {{ $labels.http_route }} is "
                    "{{ $value | humanizeDuration }}",
                    description="95% of the requests to {{ $labels.http_route }} took up to "
                    "{{ $value | humanizeDuration }} over the last 5 minutes, for 10 minutes: "
                    f"above the {slo.latency_threshold:g} s latency threshold of the SLO.",
                    runbook="Service overview dashboard, 'Latency p50 / p95 / p99 by route': is "
                    "it one route or all? One route: its queries (Database dashboard, latency by "
                    "operation) or calls (Outbound dashboard). All routes: CPU (Runtime), pool "
                    "wait time (Database), requests in progress.",
                    inputs=(_P95,),
                ),
                Alert(
                    name="OtelKitDBPoolSaturated",
                    expr=f"{_POOL_USED} > {thresholds.pool_saturation:g}",
                    for_="5m",
                    severity="ticket",
                    summary=f"Pool {{{{ $labels.{POOL} }}}} of {{{{ $labels.instance }}}} is "
                    "{{ $value | humanizePercentage }} used",
                    description=f"More than {_percent(thresholds.pool_saturation)} of the "
                    f"connections allowed in pool {{{{ $labels.{POOL} }}}} are checked out, for "
                    "5 minutes: requests will soon wait for a connection or time out.",
                    runbook="Database dashboard: 'Pending checkouts' and 'Connection wait time' "
                    "show whether requests already queue; 'Query latency by operation' whether "
                    "slow queries hold connections. Fix the slow query or a connection leak "
                    "(sessions not closed) before raising pool_size / max_overflow.",
                    inputs=(_POOL_USED,),
                ),
                Alert(
                    name="OtelKitOutboundErrors",
                    expr=f"{_OUTBOUND_FAILED} > {thresholds.outbound_error_ratio:g}",
                    for_="5m",
                    severity="ticket",
                    summary="{{ $value | humanizePercentage }} of calls from {{ $labels.job }} to "
                    "{{ $labels.server_address }} fail",
                    description=f"More than {_percent(thresholds.outbound_error_ratio)} of the "
                    "HTTP calls to {{ $labels.server_address }}:{{ $labels.server_port }} failed "
                    "(timeout, connection error or 5xx) over the last 5 minutes, for 5 minutes.",
                    runbook="Outbound calls dashboard, 'Calls by outcome': timeouts and "
                    "connection errors point at the network or an overloaded dependency, 5xx at "
                    "the dependency itself. Check its status; retries with backoff or a circuit "
                    "breaker keep the service up meanwhile.",
                    inputs=(_OUTBOUND_FAILED,),
                ),
                Alert(
                    name="OtelKitTargetDown",
                    expr=f"{up} == 0",
                    for_="5m",
                    severity="ticket",
                    summary="Prometheus cannot scrape {{ $labels.instance }} ({{ $labels.job }})",
                    description="The scrape of {{ $labels.instance }} has failed for 5 minutes: "
                    "the process is down, or its metrics endpoint does not answer.",
                    runbook="Check the process (crash loop, OOM kill) and that its metrics "
                    "endpoint answers: curl http://<instance>/metrics. The Prometheus targets "
                    "page shows the scrape error.",
                    inputs=(up,),
                ),
                Alert(
                    name="OtelKitPushStopped",
                    expr=f"group by (job) (present_over_time({info}[1h]))"
                    f" unless on (job) group by (job) ({info})"
                    f" unless on (job) group by (job) ({up})",
                    for_="2m",
                    severity="ticket",
                    summary="{{ $labels.job }} has stopped pushing metrics",
                    description="No instance of {{ $labels.job }} has pushed metrics for the "
                    "Collector's expiry and 2 minutes, though it did within the last hour. In "
                    "collector mode no scrape fails when an app dies: this is its 'target down'.",
                    runbook="Check the processes (crash loop, OOM kill), their log for OTLP "
                    "export errors, and the Collector: OtelKitCollectorRefusing, its "
                    "otelcol_receiver_* series, its log. Jobs Prometheus scrapes itself are left "
                    "to OtelKitTargetDown.",
                    inputs=(info,),
                ),
                Alert(
                    name="OtelKitMetricsAbsent",
                    expr=f"absent({info})",
                    for_="10m",
                    severity="page",
                    summary=f"No otel-kit metrics from {slo.service or 'any service'}",
                    description=f"Prometheus has had no {info} series for 10 minutes: the "
                    "service is gone from service discovery or setup_metrics() is not running, "
                    "so no other alert about it can fire.",
                    runbook="Check the deployment and Prometheus' service discovery (targets "
                    "page). If the target is up, its /metrics lacks target_info: setup_metrics() "
                    "failed or is not called; its log says why.",
                    inputs=(info,),
                ),
            ),
        ),
        Group(
            "otel-kit-collector",
            (
                Alert(
                    name="OtelKitCollectorRefusing",
                    expr=f"{_otelcol(OTELCOL_REFUSED)} > 0",
                    for_="5m",
                    severity="ticket",
                    summary="Collector {{ $labels.instance }} refuses metric points",
                    description="The Collector has refused points sent to it for 5 minutes "
                    "({{ $value | humanize }}/s): its memory_limiter is above its limit, or the "
                    "points are malformed. Senders retry, but the newest data waits.",
                    runbook="Collector log, and its memory against the container limit: raise "
                    "the limit (and GOMEMLIMIT with it), or add gateways. docs/deploy.md, "
                    "'Sizing'.",
                    inputs=(_otelcol(OTELCOL_REFUSED),),
                    collector_only=True,
                ),
                Alert(
                    name="OtelKitCollectorExportFailing",
                    expr=f"{_otelcol(OTELCOL_SEND_FAILED)} > 0",
                    for_="5m",
                    severity="ticket",
                    summary="Collector {{ $labels.instance }} fails to export metric points",
                    description="The Collector's exporter {{ $labels.exporter }} has failed to "
                    "send points for 5 minutes ({{ $value | humanize }}/s): a gateway or the "
                    "remote-write endpoint does not take them; after its retries they are lost.",
                    runbook="Collector log names the endpoint and the error; check that the "
                    "gateways (agent) or the TSDB (remote write) are up and reachable.",
                    # the failure counter appears with the first failure; the sent one is
                    # there from the first export on
                    inputs=(_otelcol(OTELCOL_SENT),),
                    collector_only=True,
                ),
            ),
        ),
    )


def _otelcol(counter: str) -> str:
    """Per-second rate of one of the Collector's own counters, per Collector (and exporter)."""
    by = "job, instance" if counter == OTELCOL_REFUSED else "job, instance, exporter"
    return f"sum by ({by}) (rate({counter}[5m]))"


_PLAIN = re.compile(r"[A-Za-z0-9(][^\n]*")
_RESERVED = re.compile(r"(?i)true|false|yes|no|on|off|null|~|[-+.0-9eE_:]+")


def _scalar(text: str) -> str:
    """YAML plain scalar when it reads back as the same string, else double-quoted (JSON)."""
    plain = _PLAIN.fullmatch(text) and not _RESERVED.fullmatch(text)
    if plain and ": " not in text and " #" not in text and not text.endswith((":", " ")):
        return text
    return json.dumps(text, ensure_ascii=False)


def _yaml(groups: Sequence[Group], header: str) -> str:
    lines = [f"# {line}".rstrip() for line in header.splitlines()] + ["groups:"]
    for group in groups:
        lines += [f"  - name: {_scalar(group.name)}", "    rules:"]
        for rule in group.rules:
            if isinstance(rule, Recording):
                lines += [f"      - record: {rule.record}", f"        expr: {_scalar(rule.expr)}"]
                continue
            lines += [f"      - alert: {rule.name}", f"        expr: {_scalar(rule.expr)}"]
            if rule.for_:
                lines.append(f"        for: {rule.for_}")
            lines.append("        labels:")
            for key, value in {"severity": rule.severity, **rule.labels}.items():
                lines.append(f"          {key}: {_scalar(value)}")
            lines.append("        annotations:")
            for key in ("summary", "description", "runbook"):
                lines.append(f"          {key}: {_scalar(getattr(rule, key))}")
    return "\n".join(lines) + "\n"


def generate(slo: SLO, thresholds: Thresholds) -> dict[str, tuple[Group, ...]]:
    return {
        "otel-kit-recording.yml": recordings(slo),
        "otel-kit-alerts.yml": alerts(slo, thresholds),
    }


def _renamed(groups: tuple[Group, ...], names: Rewrite) -> tuple[Group, ...]:
    def rule(r: Recording | Alert) -> Recording | Alert:
        if isinstance(r, Recording):
            return replace(r, expr=names.query(r.expr))
        return replace(
            r,
            expr=names.query(r.expr),
            inputs=tuple(map(names.query, r.inputs)),
            summary=names.template(r.summary),
            description=names.template(r.description),
        )

    return tuple(Group(g.name, tuple(map(rule, g.rules))) for g in groups)


def _generate_for(
    slo: SLO, thresholds: Thresholds, strategy: str = DEFAULT
) -> dict[str, tuple[Group, ...]]:
    """`generate()` with the names Prometheus stores under a translation strategy."""
    groups = generate(slo, thresholds)
    if strategy == DEFAULT:
        return groups
    names = rewrite(strategy)
    return {file: _renamed(file_groups, names) for file, file_groups in groups.items()}


def render(
    slo: SLO | None = None, thresholds: Thresholds | None = None, strategy: str = DEFAULT
) -> dict[str, str]:
    """File name -> rule file text, as committed under collector/rules/ (for the default
    translation strategy; another one's names with `strategy`)."""
    slo, thresholds = slo or SLO(), thresholds or Thresholds()
    spec = (
        f"SLO: {slo.availability_objective:g} availability, {slo.latency_objective:g} of requests "
        f"faster than {slo.latency_threshold:g} s, over 30 days, for "
        f"{f'job={slo.service!r}' if slo.service else 'every job'}.\n"
        f"Thresholds: {thresholds.error_ratio:g} error ratio, {thresholds.pool_saturation:g} pool "
        f"saturation, {thresholds.outbound_error_ratio:g} outbound error ratio."
    )
    if strategy != DEFAULT:
        spec += f"\nNames: Prometheus translation strategy {strategy}."
    header = "Generated by `otel-kit rules` from otel_kit/catalogue.py; do not edit, regenerate.\n"
    return {
        name: _yaml(groups, header + spec)
        for name, groups in _generate_for(slo, thresholds, strategy).items()
    }


def write(
    directory: Path,
    slo: SLO | None = None,
    thresholds: Thresholds | None = None,
    strategy: str = DEFAULT,
) -> list[Path]:
    return write_files(directory, render(slo, thresholds, strategy))
