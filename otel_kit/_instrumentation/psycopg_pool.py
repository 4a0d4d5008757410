"""psycopg_pool metrics: the state of every `ConnectionPool` and `AsyncConnectionPool` (the
null pools too). Their connections' statements are the psycopg integration's.

A module of its own, not part of psycopg's: under `otel-kit run` an integration is
instrumented when the application imports its library, and psycopg_pool imports psycopg
first, so psycopg's integration runs while psycopg_pool is still being imported.

`getconn()` (which `connection()` goes through) gives the wait time, the pending requests and
the timeouts (`PoolTimeout`); the idle and used counts and the maximum are the pool's own
`get_stats()` (`pool_available`; `pool_size` minus it, so connections being opened count as
used) and `max_size`, read at collection. The pending requests are counted here: the pool's
`requests_waiting` keeps a request that timed out until a connection comes back.
`db.client.connection.pool.name` is the pool's `name` when the application gave one, else
`psycopg://<host>:<port>/<dbname>` from its conninfo (never credentials). A pool is measured
from its first `getconn()` after setup.
"""

from __future__ import annotations

import functools
import re
import threading
import weakref
from collections.abc import Callable
from typing import Any

import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from otel_kit._instrumentation._context import IntegrationContext
from otel_kit._instrumentation._pools import Checkouts, pool_gauges
from otel_kit._support import Patches, report_failure, timed

__all__ = ["instrument"]

_POOL_STATE = "_otel_kit_pool_state"  # on a pool: its _PoolState
_AUTOMATIC_NAME = re.compile(r"pool-\d+")  # psycopg_pool's name for a pool given none


def _pool_name(pool: Any) -> str:
    name = str(pool.name)
    if not _AUTOMATIC_NAME.fullmatch(name):
        return name
    conninfo = pool.conninfo if isinstance(pool.conninfo, str) else ""  # or a function
    kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else {}
    params = conninfo_to_dict(conninfo, **kwargs)
    host = str(params.get("host", "")) + (f":{params['port']}" if params.get("port") else "")
    return f"psycopg://{host}/{params.get('dbname', '')}"


class _PoolState:
    __slots__ = ("lock", "name", "owner", "pending")

    def __init__(self, owner: _Instrumentation, pool: Any) -> None:
        self.owner = owner
        self.name = _pool_name(pool)
        self.pending = 0
        self.lock = threading.Lock()  # a sync pool is shared by threads


class _Instrumentation:
    def __init__(self, integration: IntegrationContext, patches: Patches) -> None:
        self.patches = patches
        self.checkouts = Checkouts(integration)
        self.pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self.lock = threading.Lock()

    def failed(self) -> None:
        report_failure("psycopg_pool")

    def begin(self, pool: Any, *args: Any, **kwargs: Any) -> _PoolState | None:
        if not self.patches.active:
            return None
        try:
            state: _PoolState | None = pool.__dict__.get(_POOL_STATE)
            if state is None or state.owner is not self:
                state = self.track(pool)
            with state.lock:
                state.pending += 1
            return state
        except Exception:
            self.failed()
            return None

    def finish(self, state: _PoolState, elapsed: float, result: Any, exc: Any) -> None:
        with state.lock:
            state.pending -= 1
        try:
            timed_out = isinstance(exc, psycopg_pool.PoolTimeout)
            self.checkouts.ended(state.name, elapsed, exc is not None, timed_out)
        except Exception:
            self.failed()

    def track(self, pool: Any) -> _PoolState:
        with self.lock:
            state: _PoolState | None = pool.__dict__.get(_POOL_STATE)
            if state is None or state.owner is not self:
                state = _PoolState(self, pool)
                pool.__dict__[_POOL_STATE] = state
                self.pools.add(pool)
                self.checkouts.first(state.name)
        return state

    def totals(self) -> dict[str, list[int]]:
        """Pool name -> [idle, used, max, pending], summed over the open pools."""
        totals: dict[str, list[int]] = {}
        for pool in list(self.pools):
            state = pool.__dict__.get(_POOL_STATE)
            if pool.closed or state is None:
                continue
            stats = pool.get_stats()
            idle = stats.get("pool_available", 0)
            total = totals.setdefault(state.name, [0, 0, 0, 0])
            total[0] += idle
            total[1] += max(stats.get("pool_size", 0) - idle, 0)
            total[2] += pool.max_size
            total[3] += max(state.pending, 0)
        return totals


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Measure every psycopg_pool pool; returns the function that stops it."""
    patches = Patches()
    instrumentation = _Instrumentation(integration, patches)
    patches.apply(
        [
            (
                pool,
                "getconn",
                functools.partial(
                    timed,
                    begin=instrumentation.begin,
                    finish=instrumentation.finish,
                    is_async=is_async,
                ),
            )
            for pool, is_async in (
                (psycopg_pool.ConnectionPool, False),
                (psycopg_pool.AsyncConnectionPool, True),
            )
        ]
    )
    stop_reporting = pool_gauges(integration).add_totals(instrumentation.totals)

    def undo() -> None:
        patches.undo()
        stop_reporting()  # the pools themselves are held weakly

    return undo
