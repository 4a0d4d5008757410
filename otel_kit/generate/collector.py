"""OpenTelemetry Collector and Prometheus configuration for collector mode.

The one source of the files shipped in `collector/` (a test keeps them equal to `generate()`
with default options) and of what `otel-kit collector-config` writes with a user's ports.
The YAML is written as text, not dumped from dicts, so each file keeps the comments that
explain it; tests parse it back and check every component against otelcol-contrib.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["COLLECTOR_IMAGE", "CollectorOptions", "generate"]

COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib:0.161.0"  # = collector/build/manifest.yaml
_VERSION = COLLECTOR_IMAGE.rpartition(":")[2]
_HOST_PORT = re.compile(r"[A-Za-z0-9._-]+:\d{1,5}")
_JOB = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_INSTANCE_FALLBACK = (
    'set(attributes["service.instance.id"], attributes["host.name"])'
    ' where attributes["service.instance.id"] == nil and attributes["host.name"] != nil'
)
# The exporters take service.* for job and instance and leave them off target_info; direct mode
# (and Prometheus' own OTLP receiver) keeps them there as service_name etc.: copy them.
_IDENTITY_COPIES = tuple(
    f'set(attributes["{name.replace(".", "_")}"], attributes["{name}"])'
    f' where attributes["{name}"] != nil'
    for name in ("service.name", "service.namespace", "service.instance.id")
)
_DURATION = re.compile(r"(\d+)([smh])")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def _seconds(duration: str) -> int:
    match = _DURATION.fullmatch(duration)
    assert match, duration
    return int(match[1]) * _SECONDS[match[2]]


def _duration(seconds: int) -> str:
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


@dataclass(frozen=True)
class CollectorOptions:
    """What differs between deployments that the generated files cannot leave to `${env:…}`."""

    otlp_grpc_port: int = 4317  # the OTel spec defaults, which otel-kit pushes to
    otlp_http_port: int = 4318
    prometheus_port: int = 8889  # the Collector's Prometheus exporter, scraped by Prometheus
    health_port: int = 13133
    telemetry_port: int = 8888  # the Collector's own metrics
    remote_write_url: str | None = None
    collector_host: str = "otel-collector"  # how Prometheus reaches the Collector
    # Direct-mode scrape jobs (job name, host:port); the default is the compose demo's app.
    direct_targets: tuple[tuple[str, str], ...] = (("shop-direct", "shop-direct:8000"),)
    scrape_interval: str = "15s"
    # How often the apps push (OTEL_METRIC_EXPORT_INTERVAL; otel-kit's default is 15 s). A
    # series leaves the Collector's page after 4 intervals without a push (at least 1 min).
    push_interval: str = "15s"

    @property
    def metric_expiration(self) -> str:
        return _duration(max(60, 4 * _seconds(self.push_interval)))

    def __post_init__(self) -> None:
        ports = {
            "otlp_grpc_port": self.otlp_grpc_port,
            "otlp_http_port": self.otlp_http_port,
            "prometheus_port": self.prometheus_port,
            "health_port": self.health_port,
            "telemetry_port": self.telemetry_port,
        }
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"{name} = {port}: expected a TCP port from 1 to 65535")
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"the Collector's ports must differ: {ports}")
        url = self.remote_write_url
        if url is not None and (
            urlsplit(url).scheme not in ("http", "https")
            or not urlsplit(url).hostname
            or not url.isprintable()
            or " " in url
        ):
            raise ValueError(f"remote_write_url = {url!r}: expected an http:// or https:// URL")
        if not _HOST.fullmatch(self.collector_host):
            raise ValueError(
                f"collector_host = {self.collector_host!r}: expected a host name or IP address"
            )
        for job, target in self.direct_targets:
            if not _JOB.fullmatch(job) or not _HOST_PORT.fullmatch(target):
                raise ValueError(f"direct target {job}={target}: expected JOB=HOST:PORT")
        for name in ("scrape_interval", "push_interval"):
            value = getattr(self, name)
            if not _DURATION.fullmatch(value) or _seconds(value) == 0:
                raise ValueError(f"{name} = {value!r}: expected a duration such as 15s, 1m or 1h")


def generate(options: CollectorOptions | None = None) -> dict[str, str]:
    """{file name: content}: the Collector (single or gateway), its agent, the remote-write
    overlay (unless a URL is given, which goes into the main file), the receiver-auth overlay
    and prometheus.yml."""
    o = options or CollectorOptions()
    files = {
        "otelcol-config.yaml": _collector(o),
        "otelcol-agent.yaml": _agent(o),
        "prometheus.yml": _prometheus(o),
    }
    if o.remote_write_url is None:
        files["otelcol-remote-write.yaml"] = _remote_write_overlay()
    files["otelcol-auth.yaml"] = _auth_overlay()
    return dict(sorted(files.items()))


def _receivers(o: CollectorOptions) -> str:
    return f"""\
extensions:
  health_check:  # GET :{o.health_port}/ answers 200 while the Collector runs (liveness probes)
    endpoint: 0.0.0.0:{o.health_port}

receivers:
  # What otel-kit pushes to (OTEL_METRICS_EXPORTER=otlp): gRPC or HTTP/protobuf. No auth and
  # no TLS: for a private network only; otelcol-auth.yaml adds a bearer token (and TLS).
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:{o.otlp_grpc_port}
      http:
        endpoint: 0.0.0.0:{o.otlp_http_port}

processors:
  # First in every pipeline: refuses data before the Collector runs out of memory, when its
  # heap passes 60 % (soft) or 75 % (hard) of the container's memory limit, or of the host's
  # memory without one: set a limit, and GOMEMLIMIT to 80 % of it (the Go runtime then
  # collects harder before the kernel kills it). Senders retry, and otel-kit's metrics are
  # cumulative, so refused data is sent again, not lost.
  memory_limiter:
    check_interval: 1s
    limit_percentage: 75
    spike_limit_percentage: 15
  batch:
    send_batch_size: 8192
    timeout: 1s
"""


def _telemetry(o: CollectorOptions) -> str:
    return f"""\
  telemetry:  # the Collector's own metrics (otelcol_*): refused, dropped and failed points
    metrics:
      readers:
        - pull:
            exporter:
              prometheus:
                host: 0.0.0.0
                port: {o.telemetry_port}
                without_type_suffix: false  # counters end in _total, as the alerts expect
"""


_REMOTE_WRITE = """\
  # Remote write to a distributed TSDB (Mimir, Thanos Receive, Cortex, VictoriaMetrics).
  # job/instance come from service.name/service.instance.id here too; target_info is sent.
  prometheusremotewrite:
    endpoint: {endpoint}
    headers:
      X-Scope-OrgID: ${{env:REMOTE_WRITE_TENANT:-anonymous}}  # Mimir/Cortex tenant
    remote_write_queue:
      queue_size: 10000
      num_consumers: 5
    retry_on_failure:
      max_elapsed_time: 10m
"""


def _collector(o: CollectorOptions) -> str:
    exporters = ["prometheus"]
    remote_write = ""
    if o.remote_write_url is not None:
        exporters.append("prometheusremotewrite")
        remote_write = _REMOTE_WRITE.format(endpoint=json.dumps(o.remote_write_url))
    else:
        overlay = "otelcol-remote-write.yaml"
        remote_write = f"  # Remote write: add --config {overlay} (see that file).\n"
    statements = "".join(f"          - {s}\n" for s in (_INSTANCE_FALLBACK, *_IDENTITY_COPIES))
    return f"""\
# OpenTelemetry Collector for otel-kit (otelcol-contrib {_VERSION}), generated by
# `otel-kit collector-config`. Apps push OTLP here; Prometheus scrapes :{o.prometheus_port}.
# On one machine it is the only Collector; with many it is the gateway behind the agents of
# otelcol-agent.yaml (docs/deploy.md).
#   otelcol-contrib --config otelcol-config.yaml

{_receivers(o)}  # The exporters make service.name and service.instance.id the job and instance.
  # otel-kit always sends an instance id; other senders may not, and then all processes of a
  # service would write into the same series: fall back to the host name. The service.*
  # attributes are copied so that target_info has service_name etc., as in direct mode.
  transform/identity:
    error_mode: ignore
    metric_statements:
      - context: resource
        statements:
{statements}
exporters:
  # Scraped with honor_labels: true so each app keeps its own job and instance. Other resource
  # attributes stay on target_info, as in direct mode: dashboards and rules work on both.
  prometheus:
    endpoint: 0.0.0.0:{o.prometheus_port}
    # Each sample carries the time the app measured it. When an app's stream moves to another
    # gateway (a gateway added, removed or restarted), the old gateway's frozen copy keeps its
    # old timestamp and Prometheus drops it, instead of mixing two copies into one series.
    send_timestamps: true
    # A stream without a push for 4 push intervals ({o.push_interval}) leaves the page: a
    # process that is gone (a restart starts a new instance) stops counting in sums.
    metric_expiration: {o.metric_expiration}
    # otel_scope_name/_version labels on every series, as in direct mode (the spec's default):
    # same-name metrics of two meters stay apart. Leave them off in both (here
    # without_scope_info: true, in the apps OTEL_KIT_PROMETHEUS_SCOPE_LABELS=false) or neither.
{remote_write}
service:
  extensions: [health_check]
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [memory_limiter, transform/identity, batch]
      exporters: [{", ".join(exporters)}]
{_telemetry(o)}"""


def _remote_write_overlay() -> str:
    return f"""\
# Adds remote write to otelcol-config.yaml, generated by `otel-kit collector-config`:
#   otelcol-contrib --config otelcol-config.yaml --config otelcol-remote-write.yaml
# The Collector merges the files (maps merge, lists are replaced). Set REMOTE_WRITE_URL, e.g.
# http://mimir:8080/api/v1/push, and REMOTE_WRITE_TENANT if your TSDB is multi-tenant.

exporters:
{_REMOTE_WRITE.format(endpoint="${env:REMOTE_WRITE_URL}")}
service:
  pipelines:
    metrics:
      exporters: [prometheus, prometheusremotewrite]
"""


def _auth_overlay() -> str:
    return """\
# Adds a bearer token to the OTLP receivers of otelcol-config.yaml or otelcol-agent.yaml,
# generated by `otel-kit collector-config` (docs/security.md):
#   OTLP_TOKEN=... otelcol-contrib --config otelcol-config.yaml --config otelcol-auth.yaml
# Senders then need it, e.g. OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer $OTLP_TOKEN";
# a request without it is refused (401, or gRPC Unauthenticated). The token crosses the
# network in clear unless TLS is on: uncomment the tls blocks (files mounted from a secret).

extensions:
  bearertokenauth/otlp:
    token: ${env:OTLP_TOKEN}

receivers:
  otlp:
    protocols:
      grpc:
        auth:
          authenticator: bearertokenauth/otlp
        # tls:
        #   cert_file: /etc/otelcol/tls/tls.crt
        #   key_file: /etc/otelcol/tls/tls.key
      http:
        auth:
          authenticator: bearertokenauth/otlp
        # tls:
        #   cert_file: /etc/otelcol/tls/tls.crt
        #   key_file: /etc/otelcol/tls/tls.key

service:
  extensions: [health_check, bearertokenauth/otlp]
"""


def _agent(o: CollectorOptions) -> str:
    return f"""\
# OpenTelemetry Collector agent for otel-kit (otelcol-contrib {_VERSION}), generated by
# `otel-kit collector-config`: one per node (Kubernetes DaemonSet) or per pod (sidecar). Apps
# push to it nearby; it batches, queues while a gateway is away, and forwards to the gateways
# (otelcol-config.yaml), each app instance always to the same gateway (routing by resource),
# so every gateway exposes complete series.
# GATEWAY_HOSTNAME: a DNS name resolving to every gateway (a headless Service in Kubernetes).
#   otelcol-contrib --config otelcol-agent.yaml

{_receivers(o)}
exporters:
  loadbalancing:
    routing_key: resource
    protocol:
      otlp:
        timeout: 10s
        tls:
          insecure: true  # plain gRPC inside the cluster; configure tls here otherwise
    resolver:
      dns:
        hostname: ${{env:GATEWAY_HOSTNAME}}
        port: "{o.otlp_grpc_port}"  # a string: the resolver refuses a number

service:
  extensions: [health_check]
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [loadbalancing]
{_telemetry(o)}"""


def _prometheus(o: CollectorOptions) -> str:
    direct = "".join(
        f"""\
  - job_name: {job}
    static_configs:
      - targets: [{", ".join(json.dumps(t) for j, t in o.direct_targets if j == job)}]
"""
        for job in dict.fromkeys(job for job, _ in o.direct_targets)
    )
    if direct:
        direct = (
            "  # Direct mode: apps serving GET /metrics. Name each job after the service, so that\n"
            "  # job means the same in both modes and the dashboards and rules work on either.\n"
            "  # A protected endpoint (OTEL_KIT_METRICS_BEARER_TOKEN or _BASIC_AUTH, see\n"
            "  # docs/security.md) needs one of these in its job:\n"
            "  #   authorization: {credentials_file: /etc/prometheus/metrics-token}\n"
            "  #   basic_auth: {username: prometheus, password_file: /etc/prometheus/metrics-pw}\n"
            + direct
        )
    collector = json.dumps(f"{o.collector_host}:{o.prometheus_port}")
    telemetry = json.dumps(f"{o.collector_host}:{o.telemetry_port}")
    return f"""\
# Prometheus (2.48 or newer) for otel-kit, generated by `otel-kit collector-config`: scrapes
# the Collector (collector mode) and apps that serve /metrics (direct mode), loads the rules.
global:
  scrape_interval: {o.scrape_interval}
  evaluation_interval: {o.scrape_interval}

rule_files:
  - rules/*.yml

scrape_configs:
  # Collector mode: every app's metrics, with the job and instance the Collector derived from
  # service.name and service.instance.id; honor_labels keeps them over the Collector's own.
  # The samples carry the apps' timestamps: a series that leaves the page is marked stale.
  - job_name: otel-collector
    honor_labels: true
    track_timestamps_staleness: true
    static_configs:
      - targets: [{collector}]
  # The Collector's health (refused, dropped, failed points); only its otelcol_* series.
  - job_name: otel-collector-internal
    static_configs:
      - targets: [{telemetry}]
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: otelcol_.*
        action: keep
{direct}"""
