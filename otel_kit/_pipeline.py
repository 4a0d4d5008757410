"""The export side of one setup: Resource, instruments, MeterProvider and its readers, the
Prometheus registry (one process or all of them) and where it is served (the app or a port).

`MetricsHandle` (`_setup`) adds what is measured (the HTTP middleware, integrations) on top.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from prometheus_client import make_asgi_app, make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from otel_kit import __version__
from otel_kit._dedup import KeepOne
from otel_kit._exporters.auth import MetricsAuth, WSGIApp
from otel_kit._exporters.prometheus import (
    PullReader,
    Translation,
    default_registry,
    make_registry,
    with_default_registry,
)
from otel_kit._exporters.push import push_reader
from otel_kit._exporters.server import DEFAULT_PORT, start_metrics_server
from otel_kit._support import at_fork
from otel_kit._user_meter import Instruments, MeterProvider, UserInstruments
from otel_kit.catalogue import DB_CLIENT_OPERATION_DURATION
from otel_kit.config import Settings

if TYPE_CHECKING:
    from otel_kit._exporters.multiprocess import Multiprocess
    from otel_kit._instrumentation.asgi import ASGIApp

__all__ = ["DURATION_HISTOGRAMS", "Pipeline", "build_resource"]

# Second-based histograms recorded through the SDK (contrib instrumentors, users); they get the
# configured duration buckets (db.client.operation.duration: db_duration_buckets). otel-kit's
# own histograms take theirs directly.
DURATION_HISTOGRAMS = (
    "http.server.request.duration",
    "http.client.request.duration",
    "db.client.operation.duration",
    "db.client.connection.wait_time",
    "db.client.connection.create_time",
    "db.client.connection.use_time",
)


_EXEMPLAR_FILTERS: dict[str, type[ExemplarFilter]] = {
    "trace_based": TraceBasedExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "always_off": AlwaysOffExemplarFilter,
}


def build_resource(settings: Settings) -> Resource:
    """service.name/version, deployment.environment.name and a fresh service.instance.id.

    Explicit settings win over OTEL_RESOURCE_ATTRIBUTES, which wins over defaults.
    """
    attributes: dict[str, str] = {"service.instance.id": str(uuid.uuid4())}
    attributes.update(settings.resource_attributes)
    attributes.setdefault("service.name", "unknown_service")
    for key, value in (
        ("service.name", settings.service_name),
        ("service.version", settings.service_version),
        ("deployment.environment.name", settings.deployment_environment),
    ):
        if value is not None:
            attributes[key] = value
    return Resource.create(attributes)


def _provider(
    settings: Settings,
    resource: Resource,
    readers: Sequence[MetricReader],
    user: UserInstruments,
) -> MeterProvider:
    """The SDK's MeterProvider with otel-kit's views; user counters and histograms no view
    changes record into `user` (`_user_meter`)."""
    keep_one = KeepOne(settings)  # other sources' copies of otel-kit's metrics are dropped
    buckets = keep_one.buckets(settings.duration_buckets)
    db_buckets = keep_one.buckets(settings.db_duration_buckets)
    views = [
        View(
            instrument_name=name,
            aggregation=db_buckets if name == DB_CLIENT_OPERATION_DURATION.name else buckets,
        )
        for name in DURATION_HISTOGRAMS
    ]
    views += keep_one.views(DURATION_HISTOGRAMS)
    return MeterProvider(
        user=user,
        metric_readers=list(readers),
        resource=resource,
        views=views,
        exemplar_filter=_EXEMPLAR_FILTERS[settings.exemplar_filter](),
    )


class Pipeline:
    """Built from the settings: one reader per exporter (`metrics_exporter`), the registry a
    scrape reads (merged over processes with `multiproc_dir`), and either `metrics_app` to
    mount on the application (`serve_on_app`) or a port server (`prometheus_port`, in one
    process of several)."""

    def __init__(self, settings: Settings, *, serve_on_app: bool) -> None:
        default = default_registry(settings)  # first: it may refuse the settings
        self.resource = build_resource(settings)
        limit = settings.cardinality_limit
        self.fast = Instruments(__version__, settings.exemplar_filter, limit)
        readers: list[MetricReader] = []
        self.registry: CollectorRegistry | None = None
        pull: PullReader | None = None
        if "prometheus" in settings.metrics_exporter:
            pull = PullReader(self.fast, self.resource, limit, Translation.of(settings))
            readers.append(pull)
            self.registry = make_registry(pull)
        readers.extend(
            push_reader(name, settings, self.fast, self.resource)
            for name in settings.metrics_exporter
            if name in ("otlp", "console")
        )
        self.meter_provider = _provider(settings, self.resource, readers, self.fast.user)
        self.multiprocess: Multiprocess | None = None
        if pull is not None and settings.multiproc_dir is not None:
            from otel_kit._exporters.multiprocess import Multiprocess  # POSIX only (fcntl)

            self.multiprocess = Multiprocess(
                settings.multiproc_dir,
                pull,
                self.resource,
                keep_instance_id="service.instance.id" in settings.resource_attributes,
                cardinality_limit=limit,
                # Only where otel-kit runs the process: it replaces signal.signal process-wide.
                handle_sigterm="OTEL_KIT_RUN_PID" in os.environ,
            )
            self.registry = self.multiprocess.registry
        if self.registry is not None and default is not None:
            self.registry = with_default_registry(self.registry, default)
            if self.multiprocess is not None:
                self.multiprocess.registry = self.registry  # what its endpoint serves
        self.metrics_app: ASGIApp | None = None
        self.metrics_wsgi_app: WSGIApp | None = None  # the same endpoint for WSGI apps
        self._server: Any = None
        self.prometheus_port: int | None = None
        if self.registry is not None:
            self._serve(settings, self.registry, serve_on_app=serve_on_app)

    def _serve(
        self, settings: Settings, registry: CollectorRegistry, *, serve_on_app: bool
    ) -> None:
        auth = MetricsAuth.from_settings(settings)  # None: no credential, nothing wrapped
        if serve_on_app:
            mp = self.multiprocess
            app = make_asgi_app(registry) if mp is None else mp.asgi_app()
            self.metrics_app = app if auth is None else auth.asgi(app)
            # In a sync worker the merge over processes runs inline, in the request's thread.
            wsgi: WSGIApp = make_wsgi_app(registry)
            self.metrics_wsgi_app = wsgi if auth is None else auth.wsgi(wsgi)
        elif self.multiprocess is None or self.multiprocess.claim_port():
            port = DEFAULT_PORT if settings.prometheus_port is None else settings.prometheus_port
            self._server = start_metrics_server(port, settings.prometheus_host, registry, auth)
            self.prometheus_port = self._server.server_address[1]
            at_fork(self, after_in_child=Pipeline._forget_server)

    def _forget_server(self) -> None:
        """In a child forked from the process serving the metrics port: the serving thread did
        not survive the fork; close this copy of its socket (the parent keeps serving)."""
        if self._server is not None:
            self._server.socket.close()
            self._server = None
            self.prometheus_port = None

    def close(self) -> None:
        """Leave the multi-process view, stop the port, flush and stop the readers."""
        if self.multiprocess is not None:
            self.multiprocess.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.meter_provider.shutdown()
