"""One copy of each metric: what other instrumentation in the process records for a library
otel-kit measures is dropped, so nothing is counted twice.

Those sources are contrib's instrumentors (`FastAPIInstrumentor`, `HTTPXClientInstrumentor`,
`SQLAlchemyInstrumentor`, ...) when the application enables them too, and redis-py's own
metrics (`redis.observability`, redis-py >= 7.2). Each records through the global
MeterProvider, which is otel-kit's, under its own meter name. `SOURCES` lists them: for every
integration otel-kit has on, SDK views drop that meter's metrics otel-kit records itself
(the stable names and contrib's older ones for the same measurement, such as
`http.server.duration` in ms). Their other metrics, and their spans, pass through. With the
integration in `disabled_instrumentations`, otel-kit measures nothing there and the other
source's metrics are kept.

FastAPI's native telemetry (FastAPI >= 0.165, meter "fastapi") is not listed: it can be turned
off per app, and is (`asgi.disable_fastapi_metrics`) on each app otel-kit measures, so an app
otel-kit does not measure keeps it (FastAPI turns it off itself where contrib's middleware is in
the app's stack). A meter's views cannot tell apps apart: with "fastapi" on, contrib's HTTP
server metrics are dropped for every app, also one otel-kit does not measure.

The drop is an SDK aggregation (`DropAggregation`): a dropped measurement is discarded before
it is aggregated or exported, by every reader. The first time a source records, one INFO line
says what is dropped and how to keep it instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

from opentelemetry.sdk.metrics._internal.aggregation import _Aggregation
from opentelemetry.sdk.metrics._internal.instrument import _Instrument
from opentelemetry.sdk.metrics.view import (
    DropAggregation,
    ExplicitBucketHistogramAggregation,
    View,
)

from otel_kit import catalogue
from otel_kit._instrumentation import INTEGRATIONS
from otel_kit._support import LogOnce
from otel_kit.config import Settings

__all__ = ["SOURCES", "KeepOne", "Source"]


class Source(NamedTuple):
    # otel-kit's integrations that measure the same calls when all are on; disabling the
    # first keeps the source's metrics
    integrations: tuple[str, ...]
    scope: str  # the meter (instrumentation scope) name the other source records with
    metrics: tuple[str, ...]  # its metrics that otel-kit records too


# Contrib's names before the stable conventions, which it still emits by default (without
# OTEL_SEMCONV_STABILITY_OPT_IN): other names and units, the same measurements.
_OLD_HTTP_SERVER_DURATION = "http.server.duration"  # ms
_OLD_HTTP_SERVER_SIZES = ("http.server.request.size", "http.server.response.size")
_OLD_HTTP_CLIENT_DURATION = "http.client.duration"  # ms
_OLD_POOL_USAGE = "db.client.connections.usage"  # db.client.connection.count by state
_OLD_FILE_DESCRIPTORS = "process.open_file_descriptor.count"

_HTTP_SERVER = (
    catalogue.HTTP_SERVER_REQUEST_DURATION.name,
    _OLD_HTTP_SERVER_DURATION,
    catalogue.HTTP_SERVER_ACTIVE_REQUESTS.name,
    catalogue.HTTP_SERVER_REQUEST_BODY_SIZE.name,
    catalogue.HTTP_SERVER_RESPONSE_BODY_SIZE.name,
    *_OLD_HTTP_SERVER_SIZES,
)
_HTTP_CLIENT = (catalogue.HTTP_CLIENT_REQUEST_DURATION.name, _OLD_HTTP_CLIENT_DURATION)
_DB_POOL = (
    catalogue.DB_CLIENT_CONNECTION_COUNT.name,
    catalogue.DB_CLIENT_CONNECTION_MAX.name,
    catalogue.DB_CLIENT_CONNECTION_PENDING_REQUESTS.name,
    catalogue.DB_CLIENT_CONNECTION_TIMEOUTS.name,
    catalogue.DB_CLIENT_CONNECTION_WAIT_TIME.name,
    _OLD_POOL_USAGE,
)
_DB = (catalogue.DB_CLIENT_OPERATION_DURATION.name, *_DB_POOL)
_RUNTIME = (
    catalogue.PROCESS_CPU_TIME.name,
    catalogue.PROCESS_MEMORY_USAGE.name,
    catalogue.PROCESS_MEMORY_VIRTUAL.name,
    catalogue.PROCESS_THREAD_COUNT.name,
    catalogue.PROCESS_UNIX_FILE_DESCRIPTOR_COUNT.name,
    _OLD_FILE_DESCRIPTORS,
    catalogue.CPYTHON_GC_COLLECTIONS.name,
    catalogue.CPYTHON_GC_COLLECTED_OBJECTS.name,
    catalogue.CPYTHON_GC_UNCOLLECTABLE_OBJECTS.name,
)

# Every source, by the otel-kit integrations that measure the same calls. A row whose
# integration is not registered (yet) is inert. Contrib 0.66 emits a subset of each row (the
# asyncpg and redis instrumentors no metrics at all); the rest are the stable names, so a later
# release that adopts them is dropped as well.
SOURCES: tuple[Source, ...] = (
    # contrib's ASGI middleware, under its FastAPI or Starlette instrumentor or on its own
    Source(("fastapi",), "opentelemetry.instrumentation.fastapi", _HTTP_SERVER),
    Source(("fastapi",), "opentelemetry.instrumentation.starlette", _HTTP_SERVER),
    Source(("fastapi",), "opentelemetry.instrumentation.asgi", _HTTP_SERVER),
    Source(("httpx",), "opentelemetry.instrumentation.httpx", _HTTP_CLIENT),
    Source(("requests", "urllib3"), "opentelemetry.instrumentation.requests", _HTTP_CLIENT),
    Source(("urllib3",), "opentelemetry.instrumentation.urllib3", _HTTP_CLIENT),
    Source(("aiohttp",), "opentelemetry.instrumentation.aiohttp_client", _HTTP_CLIENT),
    Source(("sqlalchemy",), "opentelemetry.instrumentation.sqlalchemy", _DB),
    Source(("asyncpg",), "opentelemetry.instrumentation.asyncpg", _DB),
    Source(("psycopg",), "opentelemetry.instrumentation.psycopg", _DB),
    Source(("psycopg2",), "opentelemetry.instrumentation.psycopg2", _DB),
    Source(("redis",), "opentelemetry.instrumentation.redis", _DB),
    # redis-py's own (MetricGroup.COMMAND); its pool metrics are kept: otel-kit has none for Redis
    Source(("redis",), "redis-py", (catalogue.DB_CLIENT_OPERATION_DURATION.name,)),
    Source(("runtime",), "opentelemetry.instrumentation.system_metrics", _RUNTIME),
)

# Metrics otel-kit records only when a setting asks for them: otherwise another source's copy
# is the only one, and is kept.
_RECORDED_WHEN: Mapping[str, Callable[[Settings], bool]] = {
    catalogue.HTTP_SERVER_ACTIVE_REQUESTS.name: lambda s: s.http_active_requests,
    **dict.fromkeys(
        (
            catalogue.HTTP_SERVER_REQUEST_BODY_SIZE.name,
            catalogue.HTTP_SERVER_RESPONSE_BODY_SIZE.name,
            *_OLD_HTTP_SERVER_SIZES,
        ),
        lambda s: s.http_body_sizes,
    ),
}


def _always(settings: Settings) -> bool:
    return True


def dropped(settings: Settings) -> dict[str, frozenset[str]]:
    """{meter name: the metric names of it that are dropped} for these settings."""
    on = {entry.name for entry in INTEGRATIONS}.difference(settings.disabled_instrumentations)
    out: dict[str, frozenset[str]] = {}
    for source in SOURCES:
        if not on.issuperset(source.integrations):
            continue
        names = frozenset(
            name for name in source.metrics if _RECORDED_WHEN.get(name, _always)(settings)
        )
        if names:
            out[source.scope] = names
    return out


class KeepOne:
    """The views and aggregations of one MeterProvider that drop the other sources' copies."""

    def __init__(self, settings: Settings) -> None:
        self.dropped = dropped(settings)
        self._integration = {source.scope: source.integrations[0] for source in SOURCES}
        self._told = LogOnce()
        self._drop = _Drop(self)

    def buckets(self, boundaries: Sequence[float]) -> ExplicitBucketHistogramAggregation:
        """Explicit buckets for a view that matches an instrument name in every meter: the
        dropped sources' instruments of that name get no histogram (a second, non-dropping
        view would export them: the SDK applies every view that matches)."""
        return _Buckets(boundaries, self)

    def views(self, bucketed: Collection[str]) -> list[View]:
        """A dropping view per source and metric, but for the names in `bucketed` (the
        instrument names whose views take `buckets()`)."""
        return [
            View(meter_name=scope, instrument_name=name, aggregation=self._drop)
            for scope, names in sorted(self.dropped.items())
            for name in sorted(names)
            if name not in bucketed
        ]

    def drops(self, instrument: _Instrument) -> bool:
        names = self.dropped.get(instrument.instrumentation_scope.name)
        return names is not None and instrument.name in names

    def tell(self, instrument: _Instrument) -> None:
        """The INFO line, once per source: what it records that is dropped, how to keep it."""
        scope = instrument.instrumentation_scope.name
        integration = self._integration[scope]
        self._told(
            scope,
            logging.INFO,
            "otel-kit: %s records %s, which otel-kit's %s integration records already: dropped, "
            "as are its other copies of otel-kit's metrics, so each is counted once. To keep "
            "that source's instead, turn otel-kit's off: OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=%s",
            scope,
            instrument.name,
            integration,
            integration,
        )


# The SDK calls `_create_aggregation(instrument, attributes, reservoir_factory, start_time)` when
# an instrument first records through a view, and again for each new attribute set; the rest is
# passed on as it came, so a later SDK's other arguments reach the SDK's own aggregation.


class _Drop(DropAggregation):
    """Drops every measurement, and says so once per source."""

    def __init__(self, keep: KeepOne) -> None:
        self._keep = keep

    def _create_aggregation(
        self, instrument: _Instrument, *args: Any, **kwargs: Any
    ) -> _Aggregation[Any]:
        self._keep.tell(instrument)
        return super()._create_aggregation(instrument, *args, **kwargs)


class _Buckets(ExplicitBucketHistogramAggregation):
    """Explicit buckets, except for a dropped source's instrument, which is dropped."""

    def __init__(self, boundaries: Sequence[float], keep: KeepOne) -> None:
        super().__init__(boundaries=boundaries)
        self._keep = keep

    def _create_aggregation(
        self, instrument: _Instrument, *args: Any, **kwargs: Any
    ) -> _Aggregation[Any]:
        if self._keep.drops(instrument):
            return self._keep._drop._create_aggregation(instrument, *args, **kwargs)
        return super()._create_aggregation(instrument, *args, **kwargs)
