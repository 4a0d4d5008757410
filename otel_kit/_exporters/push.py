"""Push export (`otlp` to a Collector, `console`): a periodic reader that sends the SDK's
metrics together with otel-kit's fast instruments.

A Collector that is down must cost the application nothing: export runs on the reader's own
thread, a failed export loses nothing (every metric is cumulative, so the next successful
export carries all counts), and the SDK exporter's per-attempt log records are replaced by one
warning per outage, repeated at most every `REPEAT_WARNING_S` while it lasts.

A process forked without exec (gunicorn workers, `--preload`, multiprocessing's fork) pushes its
own stream: a new `service.instance.id` (unless the resource attributes set one), and counters
and histograms minus what it inherited, counted from the fork (`_otel_data.Baseline`, the rule
the multi-process view follows too).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlsplit

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.util.types import AttributeValue

from otel_kit._exporters import INSTRUMENT_CLASSES, cardinality_limits
from otel_kit._instruments import FastInstruments
from otel_kit._otel_data import Baseline
from otel_kit._setting_rules import redact_url
from otel_kit._support import at_fork
from otel_kit.config import ConfigError, Settings

__all__ = [
    "DEFAULT_GRPC_ENDPOINT",
    "DEFAULT_HTTP_ENDPOINT",
    "REPEAT_WARNING_S",
    "ExportHealth",
    "otlp_endpoint",
    "push_reader",
]

# The OTel spec defaults; the shipped Collector config listens on these ports.
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
REPEAT_WARNING_S = 300.0

# Where the SDK exporters log each failed attempt (several records per failed export).
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
)
# Cumulative everywhere: what Prometheus expects, what the fast instruments produce, and why an
# outage loses no counts. OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE is not followed.
_CUMULATIVE = dict.fromkeys(INSTRUMENT_CLASSES, AggregationTemporality.CUMULATIVE)
_log = logging.getLogger("otel_kit")


def otlp_endpoint(settings: Settings) -> str:
    """The URL metrics are pushed to, resolved as the OTel spec says for each protocol."""
    if settings.otlp_metrics_endpoint:  # used as is
        return settings.otlp_metrics_endpoint
    if settings.otlp_protocol == "grpc":
        return settings.otlp_endpoint or DEFAULT_GRPC_ENDPOINT
    base = settings.otlp_endpoint or DEFAULT_HTTP_ENDPOINT
    return base.rstrip("/") + "/v1/metrics"


class _Quiet(logging.Filter):
    """Drops the SDK exporter's warnings and errors logged inside otel-kit's own export call
    (this thread only), keeping the first (the most specific) as the reason in otel-kit's
    warning."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and getattr(self._local, "active", False):
            self._local.first = self._local.first or record.getMessage()
            return False
        return True

    def call(self, export: Callable[[], MetricExportResult]) -> tuple[MetricExportResult, str]:
        self._local.active, self._local.first = True, ""
        try:
            return export(), self._local.first
        finally:
            self._local.active = False


def _secrets(settings: Settings) -> tuple[str, ...]:
    """What must never reach a log: the header values and the endpoints' passwords (as given
    and percent-decoded), longest first so that none is left half-hidden."""
    found = {value.get_secret_value() for value in settings.otlp_headers.values()}
    for url in (settings.otlp_endpoint, settings.otlp_metrics_endpoint):
        password = urlsplit(url).password if url else None
        if password:
            found |= {password, unquote(password)}
    return tuple(sorted(filter(None, found), key=len, reverse=True))


class ExportHealth:
    """One warning when exports start failing, a summary at most every `repeat_s` while they
    keep failing, one info line when they work again.

    `target` is shown without its password; `secrets` are masked in the reasons (the SDK's
    messages and exceptions, which may quote a URL or a header)."""

    def __init__(
        self,
        target: str,
        repeat_s: float = REPEAT_WARNING_S,
        clock: Callable[[], float] = time.monotonic,
        secrets: Sequence[str] = (),
    ) -> None:
        self._target = redact_url(target)
        self._secrets = secrets
        self._repeat_s = repeat_s
        self._clock = clock
        self._since: float | None = None
        self._failures = 0
        self._next_warning = 0.0

    def failed(self, reason: str) -> None:
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        now = self._clock()
        self._failures += 1
        if self._since is None:
            self._since, self._next_warning = now, now + self._repeat_s
            _log.warning(
                "otel-kit: cannot export metrics to %s (%s); retrying every export interval. "
                "Counters and histograms are cumulative: the next successful export carries "
                "everything counted meanwhile. Next report in %.0f s if it keeps failing.",
                self._target,
                reason,
                self._repeat_s,
            )
        elif now >= self._next_warning:
            self._next_warning = now + self._repeat_s
            _log.warning(
                "otel-kit: metrics export to %s still failing: %d failed exports in %.0f s "
                "(last: %s)",
                self._target,
                self._failures,
                now - self._since,
                reason,
            )

    def succeeded(self) -> None:
        if self._since is None:
            return
        _log.info(
            "otel-kit: metrics export to %s works again after %d failed exports in %.0f s",
            self._target,
            self._failures,
            self._clock() - self._since,
        )
        self._since, self._failures = None, 0


class _PushExporter(MetricExporter):
    """Adds the fast instruments to each export, all under this exporter's resource; never
    raises into the reader, logs via `ExportHealth` instead of once per attempt."""

    def __init__(
        self,
        inner: MetricExporter,
        fast: FastInstruments,
        resource: Resource,
        target: str,
        *,
        keep_instance_id: bool,
        secrets: Sequence[str] = (),
    ) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._fast = fast
        self._resource = resource
        self._keep_instance_id = keep_instance_id
        self._baseline = Baseline()  # what this process inherited through fork: nothing yet
        self._health = ExportHealth(target, secrets=secrets)
        self._quiet = _Quiet()
        for name in _SDK_LOGGERS:
            logging.getLogger(name).addFilter(self._quiet)

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        def attempt() -> MetricExportResult:
            merged = self._own(self._fast.merge(metrics_data, self._resource))
            return self._inner.export(merged, timeout_millis=timeout_millis, **kwargs)

        try:
            result, reason = self._quiet.call(attempt)
        except Exception as exc:  # a bug or an unexpected transport error: report, go on
            result, reason = MetricExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        if result is MetricExportResult.SUCCESS:
            self._health.succeeded()
        else:
            self._health.failed(reason or "the exporter reported a failure")
        return result

    def _own(self, merged: MetricsData) -> MetricsData:
        """This process's stream: its resource (the SDK's changes its instance id on fork, even
        a configured one), and after a fork counters and histograms minus the inherited."""
        own = self._baseline.subtract(merged)
        return replace(
            own,
            resource_metrics=[
                replace(resource_metrics, resource=self._resource)
                for resource_metrics in own.resource_metrics
            ],
        )

    def forked(self, inherited: MetricsData) -> None:
        """In a forked child, with the SDK's metrics as they were at the fork."""
        fresh: dict[str, AttributeValue] = {}
        if not self._keep_instance_id:
            fresh["service.instance.id"] = str(uuid.uuid4())
        if "process.pid" in self._resource.attributes:  # the SDK's opt-in process detector
            fresh.update({"process.pid": os.getpid(), "process.parent_pid": os.getppid()})
        self._resource = self._resource.merge(Resource(fresh))
        at_fork_ns = time.time_ns()
        self._baseline = Baseline.of(self._fast.merge(inherited, self._resource), at_fork_ns)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        try:
            self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)
        finally:
            for name in _SDK_LOGGERS:
                logging.getLogger(name).removeFilter(self._quiet)


def _exporter_class(protocol: str) -> Callable[..., MetricExporter]:
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GRPCExporter,
            )

            return GRPCExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter
    except ImportError:
        extra = "otlp-grpc" if protocol == "grpc" else "otlp"
        raise ConfigError(
            f"invalid setting OTEL_METRICS_EXPORTER = 'otlp' (protocol {protocol}): the OTLP "
            f"exporter is not installed; pip install 'otel-kit[{extra}]'"
        ) from None


def _otlp_exporter(settings: Settings) -> MetricExporter:
    endpoint = otlp_endpoint(settings)
    if settings.otlp_protocol == "grpc" and "@" in urlsplit(endpoint).netloc:
        # gRPC takes the URL's authority as its target: user info would reach gRPC's own logs
        # and resolver, never the server as credentials.
        setting = (
            "otlp_metrics_endpoint / OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
            if settings.otlp_metrics_endpoint
            else "otlp_endpoint / OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        raise ConfigError(
            f"invalid setting {setting} = {redact_url(endpoint)!r}: grpc takes no user name or "
            "password in the URL; send them as a header "
            "(OTEL_EXPORTER_OTLP_HEADERS=authorization=Basic%20...)"
        )
    # gRPC metadata keys must be lower case; HTTP does not mind.
    headers = {
        key.lower(): value.get_secret_value() for key, value in settings.otlp_headers.items()
    }
    return _exporter_class(settings.otlp_protocol)(
        endpoint=endpoint,
        headers=headers,
        timeout=settings.otlp_timeout_ms / 1000,  # the SDK exporters take seconds
        preferred_temporality=_CUMULATIVE,
    )


class _PushReader(MetricReader):
    """Every interval: collect the SDK's metrics, export them with the fast instruments.

    Not the SDK's PeriodicExportingMetricReader: it skips the export when the SDK itself has
    nothing, which would drop otel-kit's fast instruments (they live outside the SDK).
    """

    def __init__(self, exporter: _PushExporter, interval_ms: float, cardinality_limit: int) -> None:
        super().__init__(
            preferred_temporality=exporter._preferred_temporality,
            preferred_aggregation=exporter._preferred_aggregation,
            cardinality_limits=cardinality_limits(cardinality_limit),
        )
        self._exporter = exporter
        self._interval_s = interval_ms / 1000
        self._latest: MetricsData | None = None
        self._pushing = threading.Lock()  # one collect-and-export at a time
        self._collecting = threading.Lock()  # held while the SDK collects; never across a fork
        self._stop = threading.Event()
        self._thread = self._start()
        at_fork(
            self,
            before=_PushReader._before_fork,
            after_in_parent=_PushReader._after_fork_in_parent,
            after_in_child=_PushReader._after_fork_in_child,
        )

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="otel-kit-push", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._push()

    def _push(self) -> None:
        # Keep instrumented HTTP/gRPC clients from measuring the export itself.
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            with self._pushing:
                self._exporter.export(self._gather())
        finally:
            detach(token)

    def _gather(self) -> MetricsData:
        with self._collecting:
            self._latest = None
            try:
                self.collect()
            except Exception:  # an SDK callback failed: still send the fast instruments
                _log.exception("otel-kit: collecting SDK metrics failed")
            data, self._latest = self._latest, None
        return data or MetricsData(resource_metrics=[])

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._latest = metrics_data

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        self._push()
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Stop the timer and push the last interval (bounded by the exporter's timeout)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=timeout_millis / 1000)
        self._push()
        self._exporter.shutdown()

    # fork() without exec: the SDK's locks must not be held by a collection at the fork (the
    # child could never collect); an export may be under way (the child gets a fresh lock).

    def _before_fork(self) -> None:
        self._collecting.acquire()

    def _after_fork_in_parent(self) -> None:
        self._collecting.release()

    def _after_fork_in_child(self) -> None:
        """The timer thread did not survive the fork: start one, after taking what the child
        inherited as the baseline of its own stream."""
        self._collecting.release()
        if self._stop.is_set():
            return
        self._pushing = threading.Lock()
        try:
            self._exporter.forked(self._gather())
        except Exception:  # still push: counting twice beats not counting
            _log.exception("otel-kit: reading the metrics inherited through fork failed")
        self._thread = self._start()


def push_reader(
    name: str, settings: Settings, fast: FastInstruments, resource: Resource
) -> MetricReader:
    if name == "otlp":
        inner, target = _otlp_exporter(settings), otlp_endpoint(settings)
    else:
        inner, target = ConsoleMetricExporter(), "the console"
    keep_instance_id = "service.instance.id" in settings.resource_attributes
    exporter = _PushExporter(
        inner, fast, resource, target, keep_instance_id=keep_instance_id, secrets=_secrets(settings)
    )
    return _PushReader(
        exporter,
        settings.export_interval_ms,
        settings.cardinality_limit,
    )
