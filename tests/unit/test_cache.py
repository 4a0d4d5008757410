"""The any-cache helper: exact hit/miss counts per cache name, sync and async, no-op unset.

The helpers record into the global handle: every test here sets up globally.
"""

from __future__ import annotations

import pytest
from starlette.applications import Starlette

from otel_kit import MetricsHandle, setup_metrics
from otel_kit.cache import cache_metrics, record_cache_lookup
from otel_kit.catalogue import CACHE_REQUESTS
from tests.exposition import series, value

pytestmark = pytest.mark.usefixtures("global_metrics")
STORE = {"a": 1, "zero": 0}


def setup() -> MetricsHandle:
    # Served on an app nothing calls (no metrics port); redis is disabled so these tests need
    # no Redis library code paths at all.
    return setup_metrics(Starlette(), disabled_instrumentations="redis")


def lookups(text: str, cache: str, result: str) -> float:
    return value(text, "cache_requests_total", cache_name=cache, cache_result=result)


def test_record_cache_lookup_counts_per_name_and_result() -> None:
    handle = setup()
    for hit in (True, True, False):
        record_cache_lookup("local", hit)
    record_cache_lookup("memcached", hit=False)
    text = handle.render().decode()
    assert lookups(text, "local", "hit") == 2
    assert lookups(text, "local", "miss") == 1
    assert lookups(text, "memcached", "miss") == 1
    assert sorted(map(sorted, (s.items() for s in series(text, "cache_requests_total")))) == [
        [("cache_name", "local"), ("cache_result", "hit")],
        [("cache_name", "local"), ("cache_result", "miss")],
        [("cache_name", "memcached"), ("cache_result", "miss")],
    ]


def test_sync_decorator_uses_the_result() -> None:
    @cache_metrics("local")
    def get(key: str) -> int | None:
        return STORE.get(key)

    @cache_metrics("truthy", is_hit=bool)
    def get_truthy(key: str) -> int | None:
        return STORE.get(key)

    handle = setup()
    assert [get(key) for key in ("a", "zero", "nope", "nope", "nope")] == [1, 0, None, None, None]
    assert [get_truthy("a"), get_truthy("zero")] == [1, 0]
    assert get.__name__ == "get"
    text = handle.render().decode()
    assert lookups(text, "local", "hit") == 2  # 0 is a value, not a miss
    assert lookups(text, "local", "miss") == 3
    assert lookups(text, "truthy", "hit") == 1
    assert lookups(text, "truthy", "miss") == 1


async def test_async_decorator_awaits_the_lookup() -> None:
    @cache_metrics("async-local")
    async def get(key: str) -> int | None:
        return STORE.get(key)

    async def fetch(key: str) -> int:
        return 42

    async def get_cached(key: str) -> int:  # the product brief's pattern, no counters in it
        value = await get(key)
        if value is not None:
            return value
        value = await fetch(key)
        STORE[key] = value
        return value

    handle = setup()
    try:
        assert [await get_cached("b"), await get_cached("b"), await get_cached("a")] == [42, 42, 1]
    finally:
        STORE.pop("b", None)
    text = handle.render().decode()
    assert lookups(text, "async-local", "hit") == 2
    assert lookups(text, "async-local", "miss") == 1


async def test_failing_lookups_and_predicates_count_nothing_and_change_nothing() -> None:
    class Down(Exception):
        pass

    @cache_metrics("flaky")
    def broken(key: str) -> int:
        raise Down(key)

    @cache_metrics("flaky")
    async def broken_async(key: str) -> int:
        raise Down(key)

    def explode(result: object) -> bool:
        raise ValueError(result)

    @cache_metrics("flaky", is_hit=explode)
    def odd_predicate(key: str) -> str:
        return key

    handle = setup()
    with pytest.raises(Down):
        broken("k")
    with pytest.raises(Down):
        await broken_async("k")
    assert odd_predicate("k") == "k"
    text = handle.render().decode()
    assert series(text, "cache_requests_total") == []


async def test_no_op_before_setup_and_after_shutdown() -> None:
    @cache_metrics("local")
    def get(key: str) -> int | None:
        return STORE.get(key)

    @cache_metrics("local")
    async def get_async(key: str) -> int | None:
        return STORE.get(key)

    assert (get("a"), await get_async("nope")) == (1, None)
    record_cache_lookup("local", hit=True)
    first = setup()
    get("a")
    first.shutdown()
    get("a")
    record_cache_lookup("local", hit=False)

    handle = setup()  # a new setup counts from zero, into its own instrument
    assert get("nope") is None
    text = handle.render().decode()
    assert lookups(text, "local", "hit") == 0
    assert lookups(text, "local", "miss") == 1


def test_one_instrument_per_setup() -> None:
    """The Redis integration and this helper must share one cache.requests instrument."""
    handle = setup_metrics(Starlette())
    limit = handle.settings.cardinality_limit
    fast = handle._pipeline.fast
    assert fast.sum(CACHE_REQUESTS, limit) is fast.sum(CACHE_REQUESTS, limit)
    record_cache_lookup("redis", hit=True)
    text = handle.render().decode()
    assert text.count("# TYPE cache_requests_total counter") == 1
    assert lookups(text, "redis", "hit") == 1
