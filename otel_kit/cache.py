"""Cache hit/miss counting for any cache: `cache_requests_total{cache_name, cache_result}`.

    @cache_metrics("local")
    async def lookup(key: str) -> bytes | None:
        return local_cache.get(key)

    record_cache_lookup("memcached", hit=value is not None)

redis-py lookups are counted by the Redis integration already (`cache_name="redis"`); use
these for other caches. `cache_name` becomes a label value: use a fixed name per cache (never a
key, tenant or URL); past the cardinality limit new names land in the overflow series.
Before `setup_metrics()` and after `shutdown()` both do nothing, cheaply.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from otel_kit import _setup
from otel_kit._support import report_failure

__all__ = ["cache_metrics", "record_cache_lookup"]

_log = logging.getLogger("otel_kit")

P = ParamSpec("P")
R = TypeVar("R")


def record_cache_lookup(cache_name: str, hit: bool) -> None:
    """Count one lookup in cache `cache_name` (a fixed, bounded name) as a hit or a miss."""
    try:
        counter = _setup.cache_requests()
        if counter is not None:
            counter.add(1, (cache_name, "hit" if hit else "miss"))
    except Exception:
        report_failure("cache")


def _found(result: Any) -> bool:
    return result is not None


def _record(cache_name: str, is_hit: Callable[[Any], bool], result: Any) -> None:
    try:
        hit = is_hit(result)
    except Exception:
        _log.exception("otel-kit: is_hit for cache %r failed; lookup not counted", cache_name)
        return
    record_cache_lookup(cache_name, bool(hit))


def cache_metrics(
    cache_name: str, is_hit: Callable[[Any], bool] = _found
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a cache lookup function (plain or `async def`) to count calls as hits/misses.

    `is_hit(result)` decides; by default a result that is not None is a hit. A call that raises
    is not counted and its exception propagates unchanged.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def lookup_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                result = await function(*args, **kwargs)
                _record(cache_name, is_hit, result)
                return result

            return cast(Callable[P, R], lookup_async)

        @functools.wraps(function)
        def lookup(*args: P.args, **kwargs: P.kwargs) -> R:
            result = function(*args, **kwargs)
            _record(cache_name, is_hit, result)
            return result

        return lookup

    return decorate
