"""Direct Prometheus export: a pull reader and an OTel-to-Prometheus translation.

Why not contrib's PrometheusMetricReader: it crashes on exponential histograms, adds
`otel_scope_*` labels to every series (twice the bytes of prometheus_client's output) and has
no OpenMetrics negotiation of its own. This reader hands OTel data to a prometheus_client
collector, so prometheus_client does the exposition (text 0.0.4 or OpenMetrics by Accept header,
gzip) and the `/metrics` app or port.

Translation follows the OTel-to-Prometheus compatibility spec: dots to underscores, unit suffix
(`_seconds`, `_bytes`, ...), `_total` on monotonic sums, non-monotonic sums as gauges, resource
attributes on `target_info`. Scope names are not added as labels; metrics of the same name from
several scopes are merged into one family.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import (
    Gauge as GaugeData,
)
from opentelemetry.sdk.metrics.export import (
    Histogram as HistogramData,
)
from opentelemetry.sdk.metrics.export import (
    MetricReader,
    MetricsData,
)
from opentelemetry.sdk.metrics.export import (
    Sum as SumData,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from otel_kit._exporters import cardinality_limits
from otel_kit._instruments import FastInstruments
from otel_kit._support import LogOnce
from otel_kit.catalogue import prometheus_label, prometheus_name, unit_suffix
from otel_kit.config import ConfigError, Settings

__all__ = [
    "PrometheusCollector",
    "PullReader",
    "default_registry",
    "make_registry",
    "prometheus_families",
    "with_default_registry",
]

_warn_once = LogOnce().warning


class PullReader(MetricReader):
    """Collects on demand (each scrape), SDK metrics plus otel-kit's fast instruments."""

    def __init__(self, fast: FastInstruments, resource: Resource, cardinality_limit: int) -> None:
        super().__init__(cardinality_limits=cardinality_limits(cardinality_limit))
        self._fast = fast
        self._resource = resource
        self._lock = threading.Lock()
        self._latest: MetricsData | None = None

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._latest = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._latest = None

    def read(self) -> MetricsData:
        with self._lock:
            self._latest = None
            self.collect()
            data = self._latest
        return self._fast.merge(data, self._resource)


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_label_value(v) for v in value) + "]"
    return str(value)


def _labels(attributes: Any) -> dict[str, str]:
    if not attributes:
        return {}
    return {prometheus_label(k): _label_value(v) for k, v in attributes.items()}


def prometheus_families(data: MetricsData) -> Iterator[Metric]:
    """`data` as prometheus_client metric families: `target_info` per resource, then one family
    per Prometheus name (see the module docstring for the translation)."""
    families: dict[str, Metric] = {}
    for resource_metrics in data.resource_metrics:
        info = Metric("target", "Target metadata", "info")
        info.add_sample("target_info", _labels(resource_metrics.resource.attributes), 1.0)
        yield info
        for scope_metrics in resource_metrics.scope_metrics:
            for otel in scope_metrics.metrics:
                point_data = otel.data
                unit = otel.unit or ""
                if isinstance(point_data, HistogramData):
                    kind = "histogram"
                elif isinstance(point_data, SumData) and point_data.is_monotonic:
                    kind = "counter"
                elif isinstance(point_data, (SumData, GaugeData)):
                    kind = "gauge"
                else:  # exponential histograms have no Prometheus text form
                    _warn_once(f"otel-kit: {otel.name} ({type(point_data).__name__}) not exported")
                    continue
                name = prometheus_name(otel.name, unit, monotonic_sum=kind == "counter")
                base = name.removesuffix("_total") if kind == "counter" else name
                family = families.get(base)
                if family is None:
                    suffix = unit_suffix(unit)
                    family = families[base] = Metric(
                        base,
                        otel.description or otel.name,
                        kind,
                        unit=suffix if suffix and base.endswith("_" + suffix) else "",
                    )
                elif family.type != kind:
                    _warn_once(f"otel-kit: {otel.name} clashes with another {family.type}")
                    continue
                _add_samples(family, kind, point_data)
    yield from families.values()


@functools.lru_cache(maxsize=64)
def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    return (*(floatToGoString(b) for b in bounds), "+Inf")  # type: ignore[no-untyped-call]


def _add_samples(family: Metric, kind: str, point_data: Any) -> None:
    name = family.name
    if kind == "histogram":
        for point in point_data.data_points:
            labels = _labels(point.attributes)
            cumulative = 0
            le_values = _le_values(tuple(point.explicit_bounds))
            for le, count in zip(le_values, point.bucket_counts, strict=True):
                cumulative += count
                family.add_sample(name + "_bucket", {**labels, "le": le}, cumulative)
            family.add_sample(name + "_count", labels, point.count)
            family.add_sample(name + "_sum", labels, point.sum)
        return
    sample_name = name + "_total" if kind == "counter" else name
    for point in point_data.data_points:
        family.add_sample(sample_name, _labels(point.attributes), point.value)


class PrometheusCollector(Collector):
    def __init__(self, reader: PullReader) -> None:
        self._reader = reader

    def collect(self) -> Iterable[Metric]:
        return list(prometheus_families(self._reader.read()))


def make_registry(reader: PullReader) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PrometheusCollector(reader))
    return registry


# The sample names a family may expose (prometheus_client's own duplicate check uses these).
_SUFFIXES = ("", "_total", "_created", "_bucket", "_count", "_sum", "_gcount", "_gsum", "_info")


def _names(family: Metric) -> set[str]:
    return {family.name + suffix for suffix in _SUFFIXES}


class _WithDefaultRegistry(Collector):
    """otel-kit's families, then those of prometheus_client's default registry (the app's own
    metrics: prometheus-fastapi-instrumentator's, hand-written ones). A family whose names
    otel-kit uses too is left out, with a warning once: two families of one name would make
    the whole exposition invalid."""

    def __init__(self, own: CollectorRegistry, default: Collector) -> None:
        self._own = own
        self._default = default

    def collect(self) -> Iterable[Metric]:
        families = list(self._own.collect())
        taken = set().union(*map(_names, families))
        for family in self._default.collect():
            names = _names(family) | {sample.name for sample in family.samples}
            if names & taken:
                _warn_once(
                    f"otel-kit: prometheus_client's {family.name} not served: otel-kit "
                    "exports a metric of that name (metrics_include_default_registry)"
                )
                continue
            taken |= names
            families.append(family)
        return families


def default_registry(settings: Settings) -> Collector | None:
    """What `metrics_include_default_registry` adds to otel-kit's output, None when it is off.

    In prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR) the app's metrics are
    read, merged over processes, from that directory; else from the default REGISTRY, which
    holds this process's values only: refused when otel-kit serves several processes
    (`multiproc_dir`), where a scrape would show whichever process answered it.
    """
    if not settings.metrics_include_default_registry:
        return None
    from prometheus_client import REGISTRY
    from prometheus_client.multiprocess import MultiProcessCollector

    setting = (
        "invalid setting metrics_include_default_registry / "
        "OTEL_KIT_METRICS_INCLUDE_DEFAULT_REGISTRY = true: "
    )
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        if not os.path.isdir(directory):
            raise ConfigError(f"{setting}PROMETHEUS_MULTIPROC_DIR={directory!r} is no directory")
        return MultiProcessCollector(None)  # type: ignore[no-untyped-call]
    if settings.multiproc_dir is not None:
        raise ConfigError(
            f"{setting}with several processes (multiproc_dir, as under otel-kit run) it needs "
            "prometheus_client's multiprocess mode: set PROMETHEUS_MULTIPROC_DIR to an empty "
            "directory before the app starts"
        )
    return REGISTRY


def with_default_registry(registry: CollectorRegistry, default: Collector) -> CollectorRegistry:
    """`registry`, then the families of `default` (`default_registry()`) it has no name of."""
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_WithDefaultRegistry(registry, default))
    return combined
