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

COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib:0.136.0"
_VERSION = COLLECTOR_IMAGE.rpartition(":")[2]
_HOST_PORT = re.compile(r"[A-Za-z0-9._-]+:\d{1,5}")
_JOB = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_INSTANCE_FALLBACK = (
    'set(attributes["service.instance.id"], attributes["host.name"])'
    ' where attributes["service.instance.id"] == nil and attributes["host.name"] != nil'
)


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
            urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname
        ):
            raise ValueError(f"remote_write_url = {url!r}: expected an http:// or https:// URL")
        for job, target in self.direct_targets:
            if not _JOB.fullmatch(job) or not _HOST_PORT.fullmatch(target):
                raise ValueError(f"direct target {job}={target}: expected JOB=HOST:PORT")
        if not re.fullmatch(r"\d+[smh]", self.scrape_interval):
            raise ValueError(f"scrape_interval = {self.scrape_interval!r}: expected e.g. 15s")


def generate(options: CollectorOptions | None = None) -> dict[str, str]:
    """{file name: content}: the Collector (single or gateway), its agent, the remote-write
    overlay (unless a URL is given, which goes into the main file) and prometheus.yml."""
    o = options or CollectorOptions()
    files = {
        "otelcol-config.yaml": _collector(o),
        "otelcol-agent.yaml": _agent(o),
        "prometheus.yml": _prometheus(o),
    }
    if o.remote_write_url is None:
        files["otelcol-remote-write.yaml"] = _remote_write_overlay()
    return dict(sorted(files.items()))


def _receivers(o: CollectorOptions) -> str:
    return f"""\
extensions:
  health_check:  # GET :{o.health_port}/ answers 200 while the Collector runs (liveness probes)
    endpoint: 0.0.0.0:{o.health_port}

receivers:
  otlp:  # what otel-kit pushes to (OTEL_METRICS_EXPORTER=otlp): gRPC or HTTP/protobuf
    protocols:
      grpc:
        endpoint: 0.0.0.0:{o.otlp_grpc_port}
      http:
        endpoint: 0.0.0.0:{o.otlp_http_port}

processors:
  # First in every pipeline: refuses data before the Collector runs out of memory. Senders
  # retry, and otel-kit's metrics are cumulative, so refused data is sent again, not lost.
  memory_limiter:
    check_interval: 1s
    limit_percentage: 80
    spike_limit_percentage: 20
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
    return f"""\
# OpenTelemetry Collector for otel-kit (otelcol-contrib {_VERSION}), generated by
# `otel-kit collector-config`. Apps push OTLP here; Prometheus scrapes :{o.prometheus_port}.
# On one machine it is the only Collector; with many it is the gateway behind the agents of
# otelcol-agent.yaml (docs/deploy.md).
#   otelcol-contrib --config otelcol-config.yaml

{_receivers(o)}  # The exporters make service.name and service.instance.id the job and instance.
  # otel-kit always sends an instance id; other senders may not, and then all processes of a
  # service would write into the same series: fall back to the host name.
  transform/identity:
    error_mode: ignore
    metric_statements:
      - context: resource
        statements:
          - {_INSTANCE_FALLBACK}

exporters:
  # Scraped with honor_labels: true so each app keeps its own job and instance. Other resource
  # attributes stay on target_info, as in direct mode: dashboards and rules work on both.
  prometheus:
    endpoint: 0.0.0.0:{o.prometheus_port}
    metric_expiration: 5m  # a process gone for 5 min (restart: new instance) disappears
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
        port: {o.otlp_grpc_port}

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
# Prometheus for otel-kit, generated by `otel-kit collector-config`: scrapes the Collector
# (collector mode) and apps that serve /metrics (direct mode), loads otel-kit's rules.
global:
  scrape_interval: {o.scrape_interval}
  evaluation_interval: {o.scrape_interval}

rule_files:
  - rules/*.yml

scrape_configs:
  # Collector mode: every app's metrics, with the job and instance the Collector derived from
  # service.name and service.instance.id; honor_labels keeps them over the Collector's own.
  - job_name: otel-collector
    honor_labels: true
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
