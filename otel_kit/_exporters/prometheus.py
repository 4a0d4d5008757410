"""Direct Prometheus export: a pull reader and an OTel-to-Prometheus translation.

Why not contrib's PrometheusMetricReader: it crashes on exponential histograms and has no
OpenMetrics negotiation of its own. This reader hands OTel data to a prometheus_client
collector, so prometheus_client does the exposition (text 0.0.4 or OpenMetrics by Accept header,
gzip) and the `/metrics` app or port.

Translation follows the OTel "Prometheus and OpenMetrics Compatibility" spec and gives the names
and labels of the Collector's prometheus exporter and Prometheus' OTLP receiver (both use
Prometheus' otlptranslator): names and units as `catalogue.prometheus_name`, `_total` on
monotonic sums, non-monotonic sums as gauges, resource attributes on `target_info`, and
`otel_scope_name`/`_version`/`_schema_url` labels from the meter (`prometheus_scope_labels`).
Attribute keys that make one label are joined with `;`; an attribute named `le` on a
histogram becomes `exported_le`. Two series of one name and label set (possible without scope
labels, or through joined labels) are never both served: the first is kept, with a warning.

Exemplars go on the `_bucket` sample of their value's bucket and on a counter's sample
(`exemplars`); prometheus_client writes them in the OpenMetrics exposition only: the classic
text format has no exemplars.
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
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
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from otel_kit._exporters import cardinality_limits
from otel_kit._exporters.exemplars import by_bucket, newest
from otel_kit._instruments import FastInstruments
from otel_kit._support import LogOnce
from otel_kit.catalogue import (
    TRANSLATION_STRATEGIES,
    prometheus_label,
    prometheus_name,
    unit_suffix,
)
from otel_kit.config import ConfigError, Settings

__all__ = [
    "PrometheusCollector",
    "PullReader",
    "Translation",
    "default_registry",
    "make_registry",
    "prometheus_families",
    "with_default_registry",
]

_warn_once = LogOnce().warning


@dataclass(frozen=True)
class Translation:
    """How OTel data becomes Prometheus series: `otel_scope_*` labels (the spec's default) or
    none, and the naming strategy (Prometheus' `translation_strategy`)."""

    scope_labels: bool = True
    strategy: str = TRANSLATION_STRATEGIES[0]

    @classmethod
    def of(cls, settings: Settings) -> Translation:
        strategy = settings.prometheus_translation_strategy
        if strategy in _UTF8 and not hasattr(openmetrics_exposition, "ALLOWUTF8"):
            raise ConfigError(
                "invalid setting prometheus_translation_strategy / "
                f"OTEL_KIT_PROMETHEUS_TRANSLATION_STRATEGY = {strategy!r}: UTF-8 names need "
                "prometheus-client 0.23.1 or newer (escaping by content negotiation); allowed "
                f"with this one: {', '.join(TRANSLATION_STRATEGIES[:2])}"
            )
        return cls(settings.prometheus_scope_labels, strategy)


_DEFAULT = Translation()
_UTF8 = TRANSLATION_STRATEGIES[2:]  # names as OTel writes them, escaped only for old scrapers


class PullReader(MetricReader):
    """Collects on demand (each scrape), SDK metrics plus otel-kit's fast instruments."""

    def __init__(
        self,
        fast: FastInstruments,
        resource: Resource,
        cardinality_limit: int,
        translation: Translation = _DEFAULT,
    ) -> None:
        super().__init__(cardinality_limits=cardinality_limits(cardinality_limit))
        self.translation = translation  # for every registry that serves this reader's data
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


# The labels a histogram's own series carry: an attribute of that name is renamed, as
# Prometheus renames a target's label that a scrape would overwrite.
_BUCKET_LABEL = "le"
_RENAMED_BUCKET_LABEL = "exported_le"
_SCOPE_FIELDS = ("otel_scope_name", "otel_scope_version", "otel_scope_schema_url")


def _label_value(value: Any) -> str:
    """An attribute value as the Collector and Prometheus write it (pcommon's AsString): a
    float without exponent or trailing zero, a sequence as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, (list, tuple)):
        return (
            "["
            + ",".join(json.dumps(v) if isinstance(v, str) else _label_value(v) for v in value)
            + "]"
        )
    return str(value)


def _float_text(value: float) -> str:
    if math.isfinite(value):
        return format(Decimal(repr(value)).normalize(), "f")
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def _label_name(key: str, strategy: str, histogram: bool) -> str:
    name = prometheus_label(key, strategy)
    return _RENAMED_BUCKET_LABEL if histogram and name == _BUCKET_LABEL else name


def _labels(
    attributes: Any, extra: dict[str, str], strategy: str, histogram: bool = False
) -> tuple[dict[str, str], bool]:
    """A point's labels: its attributes, then `extra` (the scope's); True when two keys made
    the same label (then joined)."""
    labels: dict[str, str] = {}
    if attributes:
        for key, value in attributes.items():
            name = _label_name(key, strategy, histogram)
            if not name or name in labels:
                return _joined(attributes, extra, strategy, histogram), True
            labels[name] = _label_value(value)
    if extra:
        if not labels:
            return extra, False
        if not extra.keys().isdisjoint(labels):
            return _joined(attributes, extra, strategy, histogram), True
        labels.update(extra)
    return labels, False


def _joined(
    attributes: Any, extra: dict[str, str], strategy: str, histogram: bool
) -> dict[str, str]:
    """Keys that make the same label (`a.b` and `a_b`, or an attribute named like a scope
    label): one label, the values joined with `;` in the order of the original keys (spec)."""
    entries = sorted(
        [
            (str(k), _label_name(k, strategy, histogram), _label_value(v))
            for k, v in attributes.items()
        ]
        + [(name, name, value) for name, value in extra.items()]
    )
    labels: dict[str, str] = {}
    for key, name, value in entries:
        if not name:
            _warn_once(f"otel-kit: attribute {key!r} cannot be a Prometheus label; left out")
            continue
        labels[name] = f"{labels[name]};{value}" if name in labels else value
    return labels


def _scope_labels(scope: InstrumentationScope, strategy: str) -> dict[str, str]:
    """`otel_scope_name`, `_version`, `_schema_url` (an empty one is no label, as in
    Prometheus), and each scope attribute as `otel_scope_<key>`."""
    fields = (scope.name, scope.version or "", scope.schema_url or "")
    labels = {name: value for name, value in zip(_SCOPE_FIELDS, fields, strict=True) if value}
    attributes = {f"otel_scope_{k}": v for k, v in (scope.attributes or {}).items()}
    # the spec drops an attribute that would make a field's label
    names = {k: prometheus_label(k, strategy) for k in attributes}
    kept = {k: v for k, v in attributes.items() if names[k] not in _SCOPE_FIELDS}
    if kept:
        labels.update(_joined(kept, {}, strategy, histogram=False))
    return labels


class _Family:
    """One Prometheus family and, once it can hold a duplicate (a second OTel metric of the
    same name, or joined labels), the label sets of its series."""

    __slots__ = ("keys", "metric")

    def __init__(self, metric: Metric) -> None:
        self.metric = metric
        self.keys: set[frozenset[tuple[str, str]]] | None = None

    def check_duplicates(self) -> set[frozenset[tuple[str, str]]]:
        if self.keys is None:
            histogram = self.metric.type == "histogram"
            self.keys = {
                frozenset(sample.labels.items())
                for sample in self.metric.samples
                if not histogram or sample.name.endswith("_count")
            }
        return self.keys


def prometheus_families(data: MetricsData, translation: Translation = _DEFAULT) -> Iterator[Metric]:
    """`data` as prometheus_client metric families: `target_info` per resource, then one family
    per Prometheus name (see the module docstring for the translation)."""
    strategy = translation.strategy
    families: dict[str, _Family] = {}
    for resource_metrics in data.resource_metrics:
        info = Metric("target", "Target metadata", "info")
        labels, _ = _labels(resource_metrics.resource.attributes, {}, strategy)
        info.add_sample("target_info", labels, 1.0)
        yield info
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            extra = _scope_labels(scope, strategy) if translation.scope_labels else {}
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
                name = prometheus_name(
                    otel.name,
                    unit,
                    monotonic_sum=kind == "counter",
                    gauge=isinstance(point_data, GaugeData),
                    strategy=strategy,
                )
                if not name:
                    _warn_once(f"otel-kit: {otel.name!r} leaves no Prometheus name; not exported")
                    continue
                # a counter's family is named without _total (prometheus_client adds it to
                # the TYPE line); its samples keep the name, also without suffixes
                base = name.removesuffix("_total") if kind == "counter" else name
                family = families.get(base)
                if family is None:
                    suffix = unit_suffix(unit)
                    family = families[base] = _Family(
                        Metric(
                            base,
                            otel.description or otel.name,
                            kind,
                            unit=suffix if suffix and base.endswith("_" + suffix) else "",
                        )
                    )
                elif family.metric.type != kind:
                    _warn_once(f"otel-kit: {otel.name} clashes with another {family.metric.type}")
                    continue
                else:  # a second metric of this name: another scope, or another OTel name
                    family.check_duplicates()
                _add_samples(
                    family, name, point_data, extra, strategy, f"{otel.name} ({scope.name})"
                )
    yield from (family.metric for family in families.values())


@functools.lru_cache(maxsize=64)
def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    return (*(floatToGoString(b) for b in bounds), "+Inf")  # type: ignore[no-untyped-call]


def _add_samples(
    family: _Family,
    sample_name: str,
    point_data: Any,
    extra: dict[str, str],
    strategy: str,
    source: str,
) -> None:
    """`point_data`'s points as samples of `family`: called `sample_name` (a histogram's
    `_bucket`, `_count`, `_sum` are the family's name and those)."""
    metric = family.metric
    name = metric.name
    histogram = metric.type == "histogram"
    for point in point_data.data_points:
        labels, joined = _labels(point.attributes, extra, strategy, histogram)
        if joined or family.keys is not None:
            keys = family.check_duplicates()
            key = frozenset(labels.items())
            if key in keys:
                _warn_once(
                    f"otel-kit: {name}{labels} twice (again from {source}); kept the first "
                    "(prometheus_scope_labels=false merges the metrics of every meter)"
                )
                continue
            keys.add(key)
        exemplars = point.exemplars
        if not histogram:
            exemplar = None
            if exemplars and metric.type == "counter":  # OpenMetrics: counters and buckets only
                exemplar = newest(exemplars, _label_value)
            metric.add_sample(sample_name, labels, point.value, exemplar=exemplar)
            continue
        cumulative = 0
        bounds = tuple(point.explicit_bounds)
        bucket_exemplars = by_bucket(exemplars, bounds, _label_value) if exemplars else {}
        for index, (le, count) in enumerate(
            zip(_le_values(bounds), point.bucket_counts, strict=True)
        ):
            cumulative += count
            metric.add_sample(
                name + "_bucket",
                {**labels, "le": le},
                cumulative,
                exemplar=bucket_exemplars.get(index),
            )
        metric.add_sample(name + "_count", labels, point.count)
        metric.add_sample(name + "_sum", labels, point.sum)


class PrometheusCollector(Collector):
    def __init__(self, reader: PullReader) -> None:
        self._reader = reader

    def collect(self) -> Iterable[Metric]:
        return list(prometheus_families(self._reader.read(), self._reader.translation))


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
