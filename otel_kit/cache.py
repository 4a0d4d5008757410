"""Cache hit/miss counting for any cache: `cache_requests_total{cache_name, cache_result}`.

    @cache_metrics("local")
    async def lookup(key: str) -> bytes | None:
        return local_cache.get(key)

    record_cache_lookup("memcached", hit=value is not None)

redis-py lookups are counted by the Redis integration already (`cache_name="redis"`); use
these for other caches. `cache_name` becomes a label value: use a fixed name per cache (never a
key, tenant or URL); past the cardinality limit new names land in the overflow series.
Before `setup_metrics()` and after `shutdown()` both do nothing, cheaply.

`redis_cache(client, name)` names a Redis client's cache, or (`None`) says it is none: a job
queue (arq), locks or rate limits also send GET, and their misses are no cache's.

    users = redis_cache(redis.Redis(db=1), "users")     # cache_name="users"
    queue = redis_cache(await arq.create_pool(), None)  # its GETs are no lookups
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from otel_kit import _setup
from otel_kit._support import report_failure

__all__ = ["cache_metrics", "record_cache_lookup", "redis_cache"]

_log = logging.getLogger("otel_kit")

P = ParamSpec("P")
R = TypeVar("R")
Key = tuple[str, str]
Client = TypeVar("Client")

# Where `redis_cache` keeps a name: on the client's connection pool, which its pipelines and
# every client made on the same pool share (otel_kit/_instrumentation/redis.py reads it).
_REDIS_CACHE_NAME = "_otel_kit_cache_name"


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


def _record(
    cache_name: str, keys: tuple[Key, Key], is_hit: Callable[[Any], bool], result: Any
) -> None:
    """Count one decorated lookup; `keys`: its (miss, hit) keys, made once per function."""
    try:
        counter = _setup.cache_requests()
    except Exception:
        report_failure("cache")
        return
    if counter is None:
        return  # before setup_metrics() or after shutdown(): nothing to count, is_hit not asked
    if is_hit is _found:  # the default, without a call
        hit = result is not None
    else:
        try:
            hit = bool(is_hit(result))
        except Exception:
            _log.exception("otel-kit: is_hit for cache %r failed; lookup not counted", cache_name)
            return
    try:
        counter.add(1, keys[hit])
    except Exception:
        report_failure("cache")


def cache_metrics(
    cache_name: str, is_hit: Callable[[Any], bool] = _found
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a cache lookup function (plain or `async def`) to count calls as hits/misses.

    `is_hit(result)` decides; by default a result that is not None is a hit. A call that raises
    is not counted and its exception propagates unchanged.
    """

    keys: tuple[Key, Key] = ((cache_name, "miss"), (cache_name, "hit"))  # by bool(hit)

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def lookup_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                result = await function(*args, **kwargs)
                _record(cache_name, keys, is_hit, result)
                return result

            return cast(Callable[P, R], lookup_async)

        @functools.wraps(function)
        def lookup(*args: P.args, **kwargs: P.kwargs) -> R:
            result = function(*args, **kwargs)
            _record(cache_name, keys, is_hit, result)
            return result

        return lookup

    return decorate


def redis_cache(client: Client, name: str | None) -> Client:
    """Count `client`'s lookups (GET, MGET, HGET, ...) as cache `name`, or as no cache's when
    `name` is None; returns `client`.

    It names the client's connection pool: its pipelines and the clients sharing that pool
    are named too, also those made earlier. It works before `setup_metrics()`; the setting
    `redis_cache` (`OTEL_KIT_REDIS_CACHE`) decides what unnamed clients count as.
    """
    if name is not None and not (isinstance(name, str) and name):
        raise ValueError(
            f"redis_cache: name must be a non-empty string (a fixed cache name) or None (not a "
            f"cache), got {name!r}"
        )
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        raise TypeError(
            "redis_cache: expected a redis-py client (redis.Redis, redis.asyncio.Redis or a "
            f"pipeline; RedisCluster is not measured), got {type(client).__name__}"
        )
    setattr(pool, _REDIS_CACHE_NAME, name)
    return client
