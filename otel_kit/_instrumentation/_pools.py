"""The pool gauges every database integration reports into: `db.client.connection.count`,
`.max` and `.pending_requests`, one observable instrument each per setup.

Shared because a second registration of an instrument name on a meter returns the first
instrument and silently drops the new callbacks (OTel SDK 1.45): SQLAlchemy's pools and
asyncpg's or psycopg_pool's would otherwise hide each other. Each integration adds its
callbacks here (or one `totals` function with `add_totals`: pool name -> idle, used, max,
pending); one failing callback is logged once and the others still report.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import count
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from otel_kit import catalogue
from otel_kit._instrumentation._context import IntegrationContext
from otel_kit._instrumentation._db import pool_attributes, pool_key
from otel_kit._instrumentation._sql import suspended
from otel_kit._instruments import _count_of
from otel_kit._support import report_failure
from otel_kit.catalogue import MetricSpec

__all__ = ["Checkouts", "PoolGauges", "Tally", "Totals", "pool_gauges"]

Callback = Callable[[CallbackOptions], Iterable[Observation]]
# Pool name -> (idle, used, max (negative: unbounded, no max series), pending requests).
Totals = Callable[[], Mapping[str, Sequence[int]]]


class PoolGauges:
    """The observable pool instruments of one setup, each reading every callback added to it."""

    def __init__(self, integration: IntegrationContext) -> None:
        self._meter = integration.meter_provider.get_meter("otel_kit")
        self._callbacks: dict[str, list[Callback]] = {}
        self._lock = threading.Lock()

    def add(self, spec: MetricSpec, callback: Callback) -> None:
        with self._lock:
            callbacks = self._callbacks.get(spec.name)
            if callbacks is None:
                callbacks = self._callbacks[spec.name] = []
                self._meter.create_observable_up_down_counter(
                    spec.name,
                    [lambda options: self._observe(callbacks, options)],
                    unit=spec.unit,
                    description=spec.description,
                )
            callbacks.append(callback)

    def remove(self, spec: MetricSpec, callback: Callback) -> None:
        with self._lock:
            callbacks = self._callbacks.get(spec.name, [])
            if callback in callbacks:
                callbacks.remove(callback)

    def add_totals(self, totals: Totals) -> Callable[[], None]:
        """Report the pools `totals()` describes, read at each collection; returns the function
        that stops it."""

        def count(options: CallbackOptions) -> list[Observation]:
            return [
                Observation(total[index], pool_attributes(name, state))
                for name, total in totals().items()
                for state, index in (("idle", 0), ("used", 1))
            ]

        def maximum(options: CallbackOptions) -> list[Observation]:
            return [
                Observation(total[2], pool_attributes(name))
                for name, total in totals().items()
                if total[2] >= 0
            ]

        def pending(options: CallbackOptions) -> list[Observation]:
            return [Observation(t[3], pool_attributes(name)) for name, t in totals().items()]

        callbacks = (
            (catalogue.DB_CLIENT_CONNECTION_COUNT, count),
            (catalogue.DB_CLIENT_CONNECTION_MAX, maximum),
            (catalogue.DB_CLIENT_CONNECTION_PENDING_REQUESTS, pending),
        )
        for spec, callback in callbacks:
            self.add(spec, callback)

        def remove() -> None:
            for spec, callback in callbacks:
                self.remove(spec, callback)

        return remove

    def _observe(self, callbacks: list[Callback], options: CallbackOptions) -> list[Observation]:
        observations: list[Observation] = []
        for callback in list(callbacks):
            try:
                observations.extend(callback(options))
            except Exception:  # one integration's failure leaves the others' pools reported
                report_failure("DB connection pool")
        return observations


class Tally:
    """A pool's count of something (connections used, requests pending) that threads change
    without a lock: `up()`/`down()` are `next()` on an itertools.count, one C call under the
    GIL, so no step is lost (as `FastSum.up`/`down`)."""

    __slots__ = ("_downs", "_ups", "down", "up")

    def __init__(self) -> None:
        self._ups: count[int] = count()
        self._downs: count[int] = count()
        self.up: Callable[[], int] = self._ups.__next__
        self.down: Callable[[], int] = self._downs.__next__

    def value(self) -> int:
        downs = _count_of(self._downs)  # first: a step up and down between the reads counts
        return _count_of(self._ups) - downs


class Checkouts:
    """`db.client.connection.wait_time` and `.timeouts`: how a pool's connection requests
    ended."""

    def __init__(self, integration: IntegrationContext) -> None:
        self.wait_time = integration.histogram(catalogue.DB_CLIENT_CONNECTION_WAIT_TIME)
        self.timeouts = integration.sum(catalogue.DB_CLIENT_CONNECTION_TIMEOUTS)

    def first(self, pool: str) -> None:
        """A pool seen for the first time: its timeouts series exists at 0 (rate() works)."""
        self.timeouts.add(0, pool_key(pool))

    def ended(self, pool: str, elapsed: float, failed: bool, timed_out: bool) -> None:
        """A request of `pool` ended: with a connection after `elapsed`, or failed (a timeout
        or not); nothing inside `not_measured()`."""
        if suspended():
            return
        if not failed:
            self.wait_time.record(elapsed, pool_key(pool))
        elif timed_out:
            self.timeouts.add(1, pool_key(pool))


_gauges: weakref.WeakKeyDictionary[Any, PoolGauges] = weakref.WeakKeyDictionary()
_gauges_lock = threading.Lock()


def pool_gauges(integration: IntegrationContext) -> PoolGauges:
    """The pool gauges of `integration`'s setup (one per setup, keyed by its fast instruments)."""
    with _gauges_lock:
        gauges = _gauges.get(integration.fast)
        if gauges is None:
            gauges = _gauges[integration.fast] = PoolGauges(integration)
        return gauges
