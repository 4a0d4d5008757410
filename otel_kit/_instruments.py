"""Pre-aggregating instruments for otel-kit's own hot paths.

The OTel SDK spends ~4-5 µs per `record()`/`add()` (Measurement objects, context lookup,
exemplar filter, frozenset keys, one lock per view). A request records three measurements, so
the SDK alone would cost ~13 µs per request. These instruments keep the same data model
(cumulative explicit-bucket histograms and sums, cardinality limit with an
`otel.metric.overflow` series) at ~0.5 µs per measurement, keyed by a tuple of attribute values
in a fixed order. `FastInstruments.merge()` turns them into SDK data points at collection
time, so every exporter sees them exactly like SDK metrics.

Exemplars (`exemplar_filter`): each histogram series keeps the NEWEST exemplar per bucket,
`series.exemplars[i]` = (value, time_ns, trace_id, span_id) for bucket i (ids 0: no span, only
with always_on), None until one is recorded; kept across collections (as prometheus_client
does), exported as SDK `Exemplar`s on the point (`_otel_data.histogram_point`), so the
Prometheus exposition, OTLP push and the multi-process snapshot all read them from there.
trace_based (the default) takes the span of the current context (or the one `record()` is
given) when it is sampled; with no span the cost is one ContextVar read.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import count
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import Metric, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.propagation import _SPAN_KEY

from otel_kit._otel_data import (
    histogram_metric,
    histogram_point,
    number_metric,
    number_point,
    with_scope,
)
from otel_kit._support import at_fork
from otel_kit.catalogue import MetricSpec

__all__ = ["CURRENT", "FastHistogram", "FastInstruments", "FastSum", "current_span"]

Key = tuple[Any, ...]
_OVERFLOW: Key = ("__otel_kit_overflow__",)
ExemplarEntry = tuple[float, int, int, int]  # value, time_ns, trace_id, span_id (0: none)
# exemplar_filter as a number the hot path compares cheaply
_FILTERS = {"always_off": 0, "trace_based": 1, "always_on": 2}
_ALWAYS_ON = 2
CURRENT: Any = object()  # record(span=CURRENT): the span of the current context


class _CurrentContext:
    """Fallback when OTEL_PYTHON_CONTEXT chose a runtime context that is not contextvars."""

    @staticmethod
    def get() -> Any:
        return otel_context.get_current()


# The current OTel Context (a dict) in one ContextVar read: trace.get_current_span() costs
# ~0.5 µs through its layers, more than the whole budget of a measurement without a span.
_context: Any = getattr(otel_context._RUNTIME_CONTEXT, "_current_context", None)
if not hasattr(_context, "get"):
    _context = _CurrentContext()


def current_span() -> Any:
    """The current context's span object, None without one (cheap; never INVALID_SPAN)."""
    return _context.get().get(_SPAN_KEY)


def _exemplar(value: float, span: Any, mode: int) -> ExemplarEntry | None:
    """The exemplar of a measurement under `span` (None: none), or None if the filter says no."""
    trace_id = span_id = 0
    if span is not None:
        span_context = span.get_span_context()
        if span_context.trace_flags & 1 or (mode == _ALWAYS_ON and span_context.is_valid):
            trace_id, span_id = span_context.trace_id, span_context.span_id
    if not trace_id and mode != _ALWAYS_ON:
        return None
    return (value, time_ns(), trace_id, span_id)


def _sdk_exemplars(entries: list[ExemplarEntry | None] | None) -> list[Exemplar]:
    if entries is None:
        return []
    return [
        Exemplar({}, value, when, span_id or None, trace_id or None)
        for value, when, trace_id, span_id in filter(None, entries)
    ]


def _admit(store: dict[Key, Any], key: Key, limit: int) -> Key:
    """`key`, or the overflow key once `limit` distinct keys exist (the SDK's rule)."""
    regular = len(store) - (_OVERFLOW in store)
    return key if regular < limit else _OVERFLOW


def _attributes(keys: Sequence[str], key: Key) -> dict[str, Any]:
    if key is _OVERFLOW:
        return {"otel.metric.overflow": True}
    return {name: value for name, value in zip(keys, key, strict=True) if value is not None}


class _Series:
    __slots__ = ("counts", "exemplars", "max", "min", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.exemplars: list[ExemplarEntry | None] | None = None  # per bucket, made on first


class FastHistogram:
    """Cumulative explicit-bucket histogram. `record(value, key)`; key values None = absent.

    `exemplar_filter`: trace_based, always_on or always_off (see the module docstring)."""

    def __init__(
        self,
        spec: MetricSpec,
        bounds: Sequence[float],
        limit: int,
        exemplar_filter: str = "trace_based",
    ) -> None:
        self.spec = spec
        self.bounds = tuple(bounds)
        self._limit = limit
        self._exemplar_mode = _FILTERS[exemplar_filter]
        self._series: dict[Key, _Series] = {}
        self._lock = threading.Lock()

    def _new(self, key: Key) -> _Series:
        with self._lock:
            series = self._series.get(key)
            if series is None:
                key = _admit(self._series, key, self._limit)
                series = self._series.setdefault(key, _Series(len(self.bounds) + 1))
            return series

    def record(self, value: float, key: Key, span: Any = CURRENT) -> None:
        """`span`: the span the measurement belongs to (an object with get_span_context(), or
        None), by default the current context's; it may give the bucket's exemplar."""
        series = self._series.get(key) or self._new(key)
        index = bisect_left(self.bounds, value)
        exemplar = None
        mode = self._exemplar_mode
        if mode:
            if span is CURRENT:
                span = _context.get().get(_SPAN_KEY)
            if span is not None or mode == _ALWAYS_ON:
                exemplar = _exemplar(value, span, mode)
        lock = self._lock
        lock.acquire()  # cheaper than `with` on this path
        try:
            if exemplar is not None:
                exemplars = series.exemplars
                if exemplars is None:
                    exemplars = series.exemplars = [None] * len(series.counts)
                exemplars[index] = exemplar
            series.counts[index] += 1
            series.sum += value
            if value < series.min:
                series.min = value
            if value > series.max:
                series.max = value
        finally:
            lock.release()

    def metric(self, start: int, now: int) -> Metric:
        with self._lock:
            points = [
                histogram_point(
                    _attributes(self.spec.attributes, key),
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
        spec = self.spec
        return histogram_metric(spec.name, spec.description, spec.unit, points)


def _count_of(steps: count[int]) -> int:
    """How many times `next()` was called on a `count()` (its repr is `count(N)`)."""
    return int(repr(steps)[6:-1])


class FastSum:
    """Cumulative sum (a counter when monotonic, else an up-down counter).

    `add(amount, key)`; key values None = absent. `up(key)`/`down(key)`: add(1)/add(-1)
    without the lock, for the hot path's up-down counts (active requests).
    """

    def __init__(self, spec: MetricSpec, limit: int, *, monotonic: bool) -> None:
        self.spec = spec
        self._limit = limit
        self._monotonic = monotonic
        self._values: dict[Key, float] = {}
        # Per key, the steps up and the steps down: `next()` on an itertools.count is one C
        # call under the GIL, so threads lose no step without a lock. Their keys are in
        # `_values` too (admitted there, one cardinality limit for both).
        self._steps: dict[Key, tuple[count[int], count[int]]] = {}
        self._lock = threading.Lock()

    def add(self, amount: float, key: Key) -> None:
        values = self._values
        lock = self._lock
        lock.acquire()  # cheaper than `with` on this path
        try:
            value = values.get(key)
            if value is None:
                key = _admit(values, key, self._limit)
                value = values.get(key, 0)
            values[key] = value + amount
        finally:
            lock.release()

    def up(self, key: Key) -> None:
        """add(1, key), lock-free."""
        next((self._steps.get(key) or self._new_steps(key))[0])

    def down(self, key: Key) -> None:
        """add(-1, key), lock-free."""
        next((self._steps.get(key) or self._new_steps(key))[1])

    def _new_steps(self, key: Key) -> tuple[count[int], count[int]]:
        with self._lock:
            steps = self._steps.get(key)
            if steps is None:
                if key not in self._values:
                    key = _admit(self._values, key, self._limit)
                    self._values.setdefault(key, 0)
                steps = self._steps.setdefault(key, (count(), count()))
            return steps

    def metric(self, start: int, now: int) -> Metric:
        with self._lock:
            values = dict(self._values)
            for key, (ups, downs) in self._steps.items():
                # Downs first: a request that starts and ends between the two reads is then
                # counted as active for this collection, never one ended that had not started.
                ended = _count_of(downs)
                values[key] += _count_of(ups) - ended
            points = [
                number_point(_attributes(self.spec.attributes, key), start, now, value)
                for key, value in values.items()
            ]
        kind = "counter" if self._monotonic else "updown"
        return number_metric(self.spec.name, self.spec.description, self.spec.unit, points, kind)


class FastInstruments:
    """The fast instruments of one otel-kit setup, exported as one instrumentation scope."""

    def __init__(self, version: str, exemplar_filter: str = "trace_based") -> None:
        self._scope = InstrumentationScope("otel_kit", version)
        self._exemplar_filter = exemplar_filter
        self._start = time_ns()
        self._instruments: list[FastHistogram | FastSum] = []
        # One instrument per metric name: integrations sharing a spec (SQLAlchemy and Redis
        # durations, Redis and the cache helper) must add to one series set, not export twice.
        self._by_name: dict[str, FastHistogram | FastSum] = {}
        # Metrics read when collected, each source under its own scope (the runtime metrics).
        self._observed: list[tuple[InstrumentationScope, Callable[[int, int], list[Metric]]]] = []
        self._lock = threading.Lock()
        at_fork(self, after_in_child=FastInstruments._new_locks)

    def histogram(self, spec: MetricSpec, bounds: Sequence[float], limit: int) -> FastHistogram:
        """The histogram for `spec`; later calls return the same one (first bounds win)."""
        with self._lock:
            instrument = self._by_name.get(spec.name)
            if instrument is None:
                instrument = FastHistogram(spec, bounds, limit, self._exemplar_filter)
                self._by_name[spec.name] = instrument
                self._instruments.append(instrument)
        if not isinstance(instrument, FastHistogram):
            raise TypeError(f"{spec.name} is already registered as a sum")
        return instrument

    def sum(self, spec: MetricSpec, limit: int) -> FastSum:
        """A counter for `spec.kind == "counter"`, else an up-down counter; one per name."""
        with self._lock:
            instrument = self._by_name.get(spec.name)
            if instrument is None:
                instrument = FastSum(spec, limit, monotonic=spec.kind == "counter")
                self._by_name[spec.name] = instrument
                self._instruments.append(instrument)
        if not isinstance(instrument, FastSum):
            raise TypeError(f"{spec.name} is already registered as a histogram")
        return instrument

    def observe(
        self, scope: InstrumentationScope, collect: Callable[[int, int], list[Metric]]
    ) -> None:
        """Export what `collect(start, now)` returns at each collection, under `scope` (it
        must not raise): metrics read when collected, without the SDK's observable
        instruments (callbacks, measurements and aggregation for values that need none)."""
        with self._lock:
            self._observed.append((scope, collect))

    def merge(self, data: MetricsData | None, resource: Resource) -> MetricsData:
        """`data` (SDK metrics, None when the SDK had none) plus this scope's metrics."""
        now = time_ns()
        # Instruments without points yet are left out, as the SDK does (an OTLP metric without
        # data points has no data at all).
        metrics = [
            metric
            for metric in (instrument.metric(self._start, now) for instrument in self._instruments)
            if metric.data.data_points
        ]
        merged = with_scope(data, resource, self._scope, metrics)
        for scope, collect in self._observed:
            merged = with_scope(merged, resource, scope, collect(self._start, now))
        return merged

    def _new_locks(self) -> None:
        """In a child forked while another thread recorded: that thread is gone, its lock held."""
        self._lock = threading.Lock()
        for instrument in self._instruments:
            instrument._lock = threading.Lock()
