"""`otel_kit.not_measured()` with Redis against a real redis-server: commands and cache
lookups inside are not recorded, a concurrent task's are."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

import otel_kit
from tests.exposition import series, value
from tests.handles import MakeHandle

pytestmark = pytest.mark.integration
COUNT = "db_client_operation_duration_seconds_count"
CACHE = "cache_requests_total"


def test_commands_and_lookups_inside_are_not_recorded(
    make_handle: MakeHandle, redis_server: int
) -> None:
    handle = make_handle()
    with redis.Redis(port=redis_server, db=3) as client:
        with otel_kit.not_measured():  # e.g. warming the cache at start-up
            client.set("warm", "1")
            assert client.get("warm") == b"1"
            with client.pipeline() as pipe:
                assert pipe.get("warm").get("cold").execute() == [b"1", None]
        inside = handle.render().decode()
        assert series(inside, COUNT) == [] and series(inside, CACHE) == []
        assert client.get("warm") == b"1"
        client.delete("warm")
    text = handle.render().decode()
    assert value(text, COUNT, db_operation_name="GET") == 1
    assert value(text, COUNT, db_operation_name="DEL") == 1
    assert value(text, COUNT) == 2
    assert value(text, CACHE, cache_result="hit") == 1 and value(text, CACHE) == 1


async def test_a_concurrent_task_is_still_recorded(
    make_handle: MakeHandle, redis_server: int
) -> None:
    handle = make_handle()
    client = redis.asyncio.Redis(port=redis_server, db=3)
    entered, request_done = asyncio.Event(), asyncio.Event()

    async def warm_up() -> None:
        with otel_kit.not_measured():
            entered.set()
            await asyncio.wait_for(request_done.wait(), 10)
            await client.set("warm", "1")

    async def request() -> None:
        await asyncio.wait_for(entered.wait(), 10)
        await client.get("absent")
        request_done.set()

    await asyncio.wait_for(asyncio.gather(warm_up(), request()), 10)
    text = handle.render().decode()
    assert value(text, COUNT) == 1 and value(text, COUNT, db_operation_name="GET") == 1
    assert value(text, CACHE, cache_result="miss") == 1 and value(text, CACHE) == 1
    await client.delete("warm")
    await client.aclose()
