"""User metrics through the OTel API at otel-kit's cost: `metrics.get_meter(...)` after setup.

The SDK spends ~5-7 µs per `Counter.add`/`Histogram.record` and ~1.3-2 kB per series. The
meters of `MeterProvider` here hand out pre-aggregating synchronous instruments instead
(Counter, UpDownCounter, Histogram), exported at collection exactly like SDK metrics: each under
its meter's own InstrumentationScope (name, version, schema_url, attributes), merged by
`Instruments.merge` into the MetricsData every otel-kit reader exports (Prometheus pull, OTLP
and console push, the multi-process snapshot, the fork baseline).

What stays the SDK's:
- Creation goes through the SDK meter first: its name/unit validation (and exceptions), its
  registration-conflict warnings, its duplicate rule (the same instrument for the same name);
  the fast instrument stands in for that SDK instrument, one per SDK instrument.
- Anything unusual stays an SDK instrument: an instrument a view matches (otel-kit's duration
  bucket views, the KeepOne views dropping other sources' copies; otel-kit takes no user
  views), a disabled meter, a histogram whose bucket advisory the SDK would refuse, gauges
  and observable instruments.
- Measurements: non-finite values, negative counter adds and negative histogram records are
  dropped with the SDK's warnings; attributes are cleaned as the SDK cleans them (the first
  time an attribute set is seen; a set that cleaning changes takes the SDK's cleaning, and its
  warnings, on every call); `otel.metric.overflow=true` after `cardinality_limit` distinct sets,
  as the SDK does per reader.
- Histograms: the bucket advisory or the SDK's default bounds, min and max.

Where it differs, on purpose:
- One aggregation shared by every reader (otel-kit's readers are all cumulative, the push
  readers force it), started at setup: a point's start time is the setup's, not the series'.
- Exemplars (`exemplar_filter`, as otel-kit's own instruments): histograms keep the newest per
  bucket (the SDK's aligned reservoir keeps the last one too), counters the newest sampled
  measurement (the SDK's SimpleFixedSizeExemplarReservoir(1) a random one); both are kept
  across collections, as prometheus_client and otel-kit's own instruments do, where the SDK's
  reservoirs start empty after each collection.
- An attribute set is keyed by `frozenset(attributes.items())`: `True`, `1` and `1.0` as one
  value are one series (the SDK tells them apart by type).
- A reader added later with `add_metric_reader` sees the SDK's metrics only (as it sees none
  of otel-kit's own).
"""

from __future__ import annotations

import logging
import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Hashable, Mapping, Sequence
from itertools import pairwise
from time import time_ns
from typing import Any, TypeGuard

from opentelemetry.attributes import _clean_attribute_value
from opentelemetry.context import Context
from opentelemetry.metrics import Counter as APICounter
from opentelemetry.metrics import Histogram as APIHistogram
from opentelemetry.metrics import Meter as APIMeter
from opentelemetry.metrics import ObservableCounter, ObservableGauge, ObservableUpDownCounter
from opentelemetry.metrics import UpDownCounter as APIUpDownCounter
from opentelemetry.metrics import _Gauge as APIGauge
from opentelemetry.metrics._internal.instrument import CallbackT
from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.metrics._internal import Meter as SDKMeter
from opentelemetry.sdk.metrics._internal.aggregation import (
    _DEFAULT_EXPLICIT_BUCKET_HISTOGRAM_AGGREGATION_BOUNDARIES,
)
from opentelemetry.sdk.metrics._internal.instrument import _Synchronous
from opentelemetry.sdk.metrics.export import (
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util.types import Attributes

from otel_kit._instruments import (
    _ALWAYS_ON,
    _FILTERS,
    ExemplarEntry,
    FastInstruments,
    _context,
    _exemplar,
    _sdk_exemplars,
    _Series,
)
from otel_kit._otel_data import histogram_metric, histogram_point, number_metric
from otel_kit._support import at_fork

__all__ = [
    "Instruments",
    "MeterProvider",
    "UserCounter",
    "UserHistogram",
    "UserInstruments",
    "UserUpDownCounter",
]

_sdk_log = logging.getLogger("opentelemetry.sdk.metrics._internal.instrument")  # the SDK's
_EMPTY: frozenset[Any] = frozenset()
_OVERFLOW_ATTRIBUTES = {"otel.metric.overflow": True}
_INF = math.inf
_OVERFLOW: Hashable = ("__otel_kit_overflow__",)  # equal to no frozenset


def _admit(store: Mapping[Hashable, Any], key: Hashable, limit: int) -> Hashable:
    """`key`, or the overflow key once `limit` distinct keys exist (the SDK's rule)."""
    regular = len(store) - (_OVERFLOW in store)
    return key if regular < limit else _OVERFLOW


def _key(attributes: Attributes) -> Hashable:
    """The key the hot path looks up (may raise TypeError: unhashable values)."""
    return frozenset(attributes.items()) if attributes else _EMPTY


def _point_attributes(key: Hashable) -> dict[str, Any]:
    if key is _OVERFLOW:
        return dict(_OVERFLOW_ATTRIBUTES)
    assert isinstance(key, frozenset)
    return dict(key)


class _Instrument:
    """What the fast instruments share: the SDK instrument they stand in for, the series."""

    def __init__(self, sdk: _Synchronous, limit: int, exemplar_mode: int) -> None:
        self.sdk = sdk
        self._limit = limit
        self._mode = exemplar_mode
        self._lock = threading.Lock()

    def _clean_key(self, attributes: Attributes) -> Hashable:
        """The key of the attributes as the SDK cleans them (its warnings included)."""
        if attributes is not None and not isinstance(attributes, Mapping):
            _sdk_log.warning(
                "Invalid type '%s' for attributes. Expected a Mapping or None.", type(attributes)
            )
            return _EMPTY
        return _key(_clean_attribute_value(attributes, None) if attributes else None)

    def metric(self, start: int, now: int) -> Metric | None:
        raise NotImplementedError


class _Sum(_Instrument):
    def __init__(
        self, sdk: _Synchronous, limit: int, exemplar_mode: int, *, monotonic: bool
    ) -> None:
        super().__init__(sdk, limit, exemplar_mode)
        self._monotonic = monotonic
        self._values: dict[Hashable, float] = {}
        self._exemplars: dict[Hashable, ExemplarEntry] = {}

    def _add(self, amount: float, attributes: Attributes, context: Context | None) -> None:
        key: Hashable | None = _EMPTY
        if attributes:
            try:
                key = frozenset(attributes.items())
            except (TypeError, AttributeError):  # unhashable values, not a mapping
                key = None
        values = self._values
        exemplar = None
        mode = self._mode
        if mode:
            span = (_context.get() if context is None else context).get(_SPAN_KEY)
            if span is not None or mode == _ALWAYS_ON:
                exemplar = _exemplar(amount, span, mode)
        with self._lock:
            if key not in values:
                key = _admit(values, self._clean_key(attributes), self._limit)
                values.setdefault(key, 0)
            values[key] += amount
            if exemplar is not None:
                self._exemplars[key] = exemplar

    def metric(self, start: int, now: int) -> Metric | None:
        with self._lock:
            points = [
                NumberDataPoint(
                    attributes=_point_attributes(key),
                    start_time_unix_nano=start,
                    time_unix_nano=now,
                    value=value,
                    exemplars=_sdk_exemplars([self._exemplars.get(key)]),
                )
                for key, value in self._values.items()
            ]
        if not points:
            return None
        sdk = self.sdk
        kind = "counter" if self._monotonic else "updown"
        return number_metric(sdk.name, sdk.description, sdk.unit, points, kind)


class UserCounter(_Sum, APICounter):
    def __init__(self, sdk: _Synchronous, limit: int, exemplar_mode: int) -> None:
        _Sum.__init__(self, sdk, limit, exemplar_mode, monotonic=True)

    def add(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        if amount >= 0 and amount != _INF:
            self._add(amount, attributes, context)
        elif math.isfinite(amount):
            _sdk_log.warning("Add amount must be non-negative on Counter %s.", self.sdk.name)
        else:
            _sdk_log.warning(
                "Add amount %s is not finite on Counter %s, ignoring measurement.",
                amount,
                self.sdk.name,
            )


class UserUpDownCounter(_Sum, APIUpDownCounter):
    def __init__(self, sdk: _Synchronous, limit: int, exemplar_mode: int) -> None:
        _Sum.__init__(self, sdk, limit, exemplar_mode, monotonic=False)

    def add(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        if not math.isfinite(amount):
            _sdk_log.warning(
                "Add amount %s is not finite on UpDownCounter %s, ignoring measurement.",
                amount,
                self.sdk.name,
            )
            return
        self._add(amount, attributes, context)


class UserHistogram(_Instrument, APIHistogram):
    def __init__(
        self, sdk: _Synchronous, limit: int, exemplar_mode: int, bounds: Sequence[float]
    ) -> None:
        _Instrument.__init__(self, sdk, limit, exemplar_mode)
        self.bounds = tuple(bounds)
        self._series: dict[Hashable, _Series] = {}

    def _new(self, attributes: Attributes) -> _Series:
        key = self._clean_key(attributes)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                key = _admit(self._series, key, self._limit)
                series = self._series.setdefault(key, _Series(len(self.bounds) + 1))
            return series

    def record(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        if not 0 <= amount < _INF:
            if math.isfinite(amount):
                _sdk_log.warning(
                    "Record amount must be non-negative on Histogram %s.", self.sdk.name
                )
            else:
                _sdk_log.warning(
                    "Record amount %s is not finite on Histogram %s, ignoring measurement.",
                    amount,
                    self.sdk.name,
                )
            return
        try:
            series = self._series.get(frozenset(attributes.items()) if attributes else _EMPTY)
        except (TypeError, AttributeError):  # unhashable values, not a mapping
            series = None
        if series is None:
            series = self._new(attributes)
        index = bisect_left(self.bounds, amount)
        exemplar = None
        mode = self._mode
        if mode:
            span = (_context.get() if context is None else context).get(_SPAN_KEY)
            if span is not None or mode == _ALWAYS_ON:
                exemplar = _exemplar(amount, span, mode)
        with self._lock:
            if exemplar is not None:
                exemplars = series.exemplars
                if exemplars is None:
                    exemplars = series.exemplars = [None] * len(series.counts)
                exemplars[index] = exemplar
            series.counts[index] += 1
            series.sum += amount
            if amount < series.min:
                series.min = amount
            if amount > series.max:
                series.max = amount

    def metric(self, start: int, now: int) -> Metric | None:
        with self._lock:
            points = [
                histogram_point(
                    _point_attributes(key),
                    start,
                    now,
                    bounds=self.bounds,
                    counts=series.counts,
                    total=series.sum,
                    low=series.min,
                    high=series.max,
                    exemplars=_sdk_exemplars(series.exemplars),
                )
                for key, series in self._series.items()
            ]
        if not points:
            return None
        sdk = self.sdk
        return histogram_metric(sdk.name, sdk.description, sdk.unit, points)


def _valid_bounds(bounds: Sequence[float]) -> bool:
    """What the SDK's explicit-bucket aggregation accepts (it raises on the rest)."""
    return all(math.isfinite(b) for b in bounds) and all(a < b for a, b in pairwise(bounds))


class UserInstruments:
    """The fast instruments of every meter of one MeterProvider, by scope."""

    def __init__(self, cardinality_limit: int, exemplar_filter: str = "trace_based") -> None:
        self._limit = cardinality_limit
        self._mode = _FILTERS[exemplar_filter]
        self._start = time_ns()
        self._by_sdk: dict[int, _Instrument] = {}  # id of the SDK instrument (kept alive here)
        self._scopes: dict[InstrumentationScope, list[_Instrument]] = {}
        self._lock = threading.Lock()
        at_fork(self, after_in_child=UserInstruments._new_locks)

    def instrument(self, sdk: _Synchronous, make: Callable[[], _Instrument]) -> _Instrument:
        """The fast instrument standing in for `sdk` (the same one for the same SDK one)."""
        with self._lock:
            fast = self._by_sdk.get(id(sdk))
            if fast is None:
                fast = self._by_sdk[id(sdk)] = make()
                self._scopes.setdefault(sdk.instrumentation_scope, []).append(fast)
            return fast

    def counter(self, sdk: _Synchronous) -> _Instrument:
        return self.instrument(sdk, lambda: UserCounter(sdk, self._limit, self._mode))

    def up_down_counter(self, sdk: _Synchronous) -> _Instrument:
        return self.instrument(sdk, lambda: UserUpDownCounter(sdk, self._limit, self._mode))

    def histogram(self, sdk: _Synchronous, bounds: Sequence[float]) -> _Instrument:
        return self.instrument(sdk, lambda: UserHistogram(sdk, self._limit, self._mode, bounds))

    def scope_metrics(self) -> list[tuple[InstrumentationScope, list[Metric]]]:
        now = time_ns()
        with self._lock:
            scopes = [(scope, list(instruments)) for scope, instruments in self._scopes.items()]
        out = []
        for scope, instruments in scopes:
            metrics = [m for m in (i.metric(self._start, now) for i in instruments) if m]
            if metrics:
                out.append((scope, metrics))
        return out

    def merge(self, data: MetricsData, resource: Resource) -> MetricsData:
        """`data` with these metrics added to its first resource (`resource` when it has none):
        into the SDK's ScopeMetrics of the same scope (a meter's observable instruments stay
        the SDK's), else as a new one."""
        found = self.scope_metrics()
        if not found:
            return data
        if data.resource_metrics:
            first, *rest = data.resource_metrics
        else:
            first, rest = ResourceMetrics(resource=resource, scope_metrics=[], schema_url=""), []
        scopes = list(first.scope_metrics)
        index = {scope_metrics.scope: i for i, scope_metrics in enumerate(scopes)}
        for scope, metrics in found:
            i = index.get(scope)
            if i is None:
                scopes.append(ScopeMetrics(scope=scope, metrics=metrics, schema_url=""))
            else:
                old = scopes[i]
                scopes[i] = ScopeMetrics(old.scope, [*old.metrics, *metrics], old.schema_url)
        merged = ResourceMetrics(first.resource, scopes, first.schema_url)
        return MetricsData(resource_metrics=[merged, *rest])

    def _new_locks(self) -> None:
        """In a child forked while another thread recorded: that thread is gone, its lock held."""
        self._lock = threading.Lock()
        for instrument in self._by_sdk.values():
            instrument._lock = threading.Lock()


class Instruments(FastInstruments):
    """otel-kit's own fast instruments and the user's (`user`), merged into every export."""

    def __init__(self, version: str, exemplar_filter: str, cardinality_limit: int) -> None:
        super().__init__(version, exemplar_filter)
        self.user = UserInstruments(cardinality_limit, exemplar_filter)

    def merge(self, data: MetricsData | None, resource: Resource) -> MetricsData:
        return self.user.merge(super().merge(data, resource), resource)


class _Meter(APIMeter):
    """An SDK meter whose synchronous counters and histograms are otel-kit's."""

    def __init__(self, sdk: SDKMeter, provider: MeterProvider) -> None:
        super().__init__(sdk.name, sdk.version, sdk.schema_url)
        self._sdk = sdk
        self._provider = provider

    def create_counter(self, name: str, unit: str = "", description: str = "") -> APICounter:
        sdk = self._sdk.create_counter(name, unit, description)
        if not self._provider.routes(sdk):
            return sdk
        fast = self._provider.user.counter(sdk)
        assert isinstance(fast, APICounter)
        return fast

    def create_up_down_counter(
        self, name: str, unit: str = "", description: str = ""
    ) -> APIUpDownCounter:
        sdk = self._sdk.create_up_down_counter(name, unit, description)
        if not self._provider.routes(sdk):
            return sdk
        fast = self._provider.user.up_down_counter(sdk)
        assert isinstance(fast, APIUpDownCounter)
        return fast

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> APIHistogram:
        sdk = self._sdk.create_histogram(
            name,
            unit,
            description,
            explicit_bucket_boundaries_advisory=explicit_bucket_boundaries_advisory,
        )
        advisory = getattr(getattr(sdk, "_advisory", None), "explicit_bucket_boundaries", None)
        bounds = _DEFAULT_EXPLICIT_BUCKET_HISTOGRAM_AGGREGATION_BOUNDARIES
        if advisory is not None:
            bounds = tuple(advisory)
        if not self._provider.routes(sdk) or not _valid_bounds(bounds):
            return sdk
        fast = self._provider.user.histogram(sdk, bounds)
        assert isinstance(fast, APIHistogram)
        return fast

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> APIGauge:
        return self._sdk.create_gauge(name, unit, description)

    def create_observable_counter(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableCounter:
        return self._sdk.create_observable_counter(name, callbacks, unit, description)

    def create_observable_gauge(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableGauge:
        return self._sdk.create_observable_gauge(name, callbacks, unit, description)

    def create_observable_up_down_counter(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableUpDownCounter:
        return self._sdk.create_observable_up_down_counter(name, callbacks, unit, description)


class MeterProvider(SDKMeterProvider):
    """The SDK's MeterProvider whose meters record synchronous instruments no view changes
    into `user` (see the module docstring); everything else is the SDK's."""

    def __init__(self, *, user: UserInstruments, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user = user
        self._wrapped: dict[int, _Meter] = {}  # id of the SDK meter (kept by the SDK)
        self._wrap_lock = threading.Lock()

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> APIMeter:
        meter = super().get_meter(name, version, schema_url, attributes)
        if not isinstance(meter, SDKMeter):  # disabled, shut down, no name: the SDK's no-op
            return meter
        with self._wrap_lock:
            wrapped = self._wrapped.get(id(meter))
            if wrapped is None:
                wrapped = self._wrapped[id(meter)] = _Meter(meter, self)
            return wrapped

    def routes(self, sdk: object) -> TypeGuard[_Synchronous]:
        """Whether `sdk` (what the SDK meter returned) may be recorded by a fast instrument."""
        return (
            isinstance(sdk, _Synchronous)
            and sdk._is_enabled()
            and not any(view._match(sdk) for view in self._sdk_config.views)
        )
