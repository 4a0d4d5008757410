"""Redis metrics against a real redis-server: durations per command, hits/misses, errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
import redis.asyncio
import redis.asyncio.client
import redis.asyncio.retry
import redis.client
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_kit import MetricsHandle, setup_metrics
from otel_kit.cache import record_cache_lookup
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.integration.processes import free_port

pytestmark = pytest.mark.integration
COUNT = "db_client_operation_duration_seconds_count"
PATCHED = [
    (redis.client.Redis, "execute_command"),
    (redis.client.Pipeline, "immediate_execute_command"),
    (redis.client.Pipeline, "execute"),
    (redis.asyncio.client.Redis, "execute_command"),
    (redis.asyncio.client.Pipeline, "immediate_execute_command"),
    (redis.asyncio.client.Pipeline, "execute"),
]


def methods() -> list[object]:
    """The functions the Redis integration replaces, as the classes hold them now."""
    return [cls.__dict__[name] for cls, name in PATCHED]


@pytest.fixture
def port(redis_server: int) -> Iterator[int]:
    """The session's redis-server, emptied before each test (before any setup)."""
    with redis.Redis(port=redis_server) as client:
        client.flushall()
    yield redis_server


Setup = Callable[[], MetricsHandle]


@pytest.fixture
def setup(make_handle: MakeHandle) -> Setup:
    """`setup()`: a handle of the test's own, made when the test calls it (a test may act
    before the setup)."""
    return lambda: make_handle(prometheus_host="127.0.0.1", prometheus_port=0)


def ops(text: str, operation: str, **labels: str) -> float:
    return value(text, COUNT, db_operation_name=operation, **labels)


def cache(text: str, result: str) -> float:
    return value(text, "cache_requests_total", cache_name="redis", cache_result=result)


def operations(text: str) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """db_operation_name -> the other labels of its duration series."""
    out: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for labels in series(text, COUNT):
        name = labels.pop("db_operation_name")
        out.setdefault(name, set()).add(tuple(sorted(labels.items())))
    return out


def plain(port: int) -> tuple[tuple[str, str], ...]:
    """The labels of a command that succeeded on `redis.Redis(port=port)` (db 0, localhost)."""
    address = (("server_address", "localhost"), ("server_port", str(port)))
    return (("db_namespace", "0"), ("db_system_name", "redis"), *address)


@pytest.mark.parametrize("decode", [False, True])
def test_sync_lookups_count_hits_and_misses(setup: Setup, port: int, decode: bool) -> None:
    handle = setup()
    r = redis.Redis(port=port, decode_responses=decode)
    v = (lambda s: s) if decode else (lambda s: s.encode())
    assert r.set("user:secret-1", "v1") is True
    assert r.hset("h:secret-2", mapping={"f1": "a", "f2": "b"}) == 2
    assert r.get("user:secret-1") == v("v1")
    assert r.get("user:secret-1") == v("v1")
    assert r.get("missing:secret-3") is None
    assert r.mget("user:secret-1", "missing:secret-3", "missing:secret-4") == [v("v1"), None, None]
    assert r.hget("h:secret-2", "f1") == v("a")
    assert r.hget("h:secret-2", "nope") is None
    assert r.hmget("h:secret-2", ["f1", "f2", "nope"]) == [v("a"), v("b"), None]
    assert r.hgetall("h:secret-2") == {v("f1"): v("a"), v("f2"): v("b")}
    assert r.hgetall("missing:secret-5") == {}
    assert r.exists("user:secret-1") == 1
    assert r.execute_command("get", "user:secret-1") == v("v1")  # lower case: still GET
    r.close()

    text = handle.render().decode()
    # GET 3, MGET 1, HGET 1, HMGET 2, HGETALL 1 / GET 1, MGET 2, HGET 1, HMGET 1, HGETALL 1
    assert cache(text, "hit") == 8
    assert cache(text, "miss") == 6
    assert [set(s) for s in series(text, "cache_requests_total")] == [
        {"cache_name", "cache_result"}
    ] * 2
    counts = {"SET": 1, "HSET": 1, "GET": 4, "MGET": 1, "HGET": 2, "HMGET": 1, "HGETALL": 2}
    counts["EXISTS"] = 1
    assert operations(text) == {name: {plain(port)} for name in counts}
    for name, count in counts.items():
        assert ops(text, name) == count
    assert "secret" not in text


@pytest.mark.parametrize("decode", [False, True])
async def test_async_lookups_count_hits_and_misses(setup: Setup, port: int, decode: bool) -> None:
    handle = setup()
    r = redis.asyncio.Redis(port=port, decode_responses=decode)
    v = (lambda s: s) if decode else (lambda s: s.encode())
    assert await r.set("user:secret-1", "v1") is True
    assert await r.hset("h:secret-2", mapping={"f1": "a"}) == 1
    assert await r.get("user:secret-1") == v("v1")
    assert await r.get("missing:secret-3") is None
    assert await r.get("missing:secret-4") is None
    assert await r.mget("user:secret-1", "user:secret-1", "missing:secret-3") == [
        v("v1"),
        v("v1"),
        None,
    ]
    assert await r.hget("h:secret-2", "f1") == v("a")
    assert await r.hmget("h:secret-2", ["nope", "f1"]) == [None, v("a")]
    await r.aclose()

    text = handle.render().decode()
    assert cache(text, "hit") == 5  # GET 1, MGET 2, HGET 1, HMGET 1
    assert cache(text, "miss") == 4  # GET 2, MGET 1, HMGET 1
    counts = {"SET": 1, "HSET": 1, "GET": 3, "MGET": 1, "HGET": 1, "HMGET": 1}
    assert operations(text) == {name: {plain(port)} for name in counts}
    for name, count in counts.items():
        assert ops(text, name) == count
    assert "secret" not in text


def test_db_index_is_the_namespace(setup: Setup, port: int) -> None:
    handle = setup()
    with redis.Redis(port=port, db=3) as r:
        assert r.get("k") is None
    text = handle.render().decode()
    assert ops(text, "GET", db_namespace="3") == 1
    assert ops(text, "GET", db_namespace="0") == 0


def test_sync_pipelines(setup: Setup, port: int) -> None:
    handle = setup()
    r = redis.Redis(port=port)
    r.set("p:a", "1")
    with r.pipeline(transaction=True) as pipe:
        pipe.get("p:a").get("p:missing").mget("p:a", "p:missing").set("p:b", "2")
        assert pipe.execute() == [b"1", None, [b"1", None], True]
    with r.pipeline(transaction=False) as pipe:
        pipe.get("p:b").hget("p:h", "f").incr("p:b")
        assert pipe.execute() == [b"2", None, 3]
    with r.pipeline(transaction=False) as pipe:  # per-command errors kept in the results
        pipe.set("p:s", "x").incr("p:s").get("p:s").hset("p:hash", "f", "v").get("p:hash")
        replies = pipe.execute(raise_on_error=False)
        assert replies[0] is True and isinstance(replies[1], redis.ResponseError)
        assert replies[2:4] == [b"x", 1]
        assert isinstance(replies[4], redis.ResponseError)  # WRONGTYPE: not a lookup result
    with r.pipeline(transaction=True) as pipe:  # execute() raises: no lookups counted
        pipe.get("p:a").incr("p:s")
        with pytest.raises(redis.ResponseError):
            pipe.execute()
    with r.pipeline() as pipe:  # WATCH: the read before MULTI runs at once
        pipe.watch("w:k")
        assert pipe.get("w:k") is None
        pipe.multi()
        pipe.set("w:k", "1")
        assert pipe.execute() == [True]
    with r.pipeline() as pipe:
        assert pipe.execute() == []  # nothing queued: no round trip, nothing recorded
    r.close()

    text = handle.render().decode()
    assert ops(text, "MULTI") == 3
    assert ops(text, "MULTI", error_type="redis.exceptions.ResponseError") == 1
    assert ops(text, "PIPELINE") == 2
    assert ops(text, "PIPELINE", error_type="redis.exceptions.ResponseError") == 0
    assert {name: ops(text, name) for name in ("SET", "WATCH", "GET", "INCRBY")} == {
        "SET": 1,
        "WATCH": 1,
        "GET": 1,
        "INCRBY": 0,  # queued commands are timed as their pipeline
    }
    # MULTI: GET 1/1, MGET 1/1; PIPELINE: GET 1, HGET 0/1, then GET 1; WATCH: GET 0/1
    assert cache(text, "hit") == 4
    assert cache(text, "miss") == 4


async def test_async_pipelines(setup: Setup, port: int) -> None:
    handle = setup()
    r = redis.asyncio.Redis(port=port, decode_responses=True)
    await r.set("p:a", "1")
    async with r.pipeline(transaction=True) as pipe:
        pipe.get("p:a").mget("p:missing", "p:missing", "p:a")
        assert await pipe.execute() == ["1", [None, None, "1"]]
    async with r.pipeline(transaction=False) as pipe:
        pipe.get("p:missing").set("p:s", "x").incr("p:s").hget("p:h", "f").hget("p:s", "f")
        replies = await pipe.execute(raise_on_error=False)
        assert replies[:2] == [None, True] and isinstance(replies[2], redis.ResponseError)
        assert replies[3] is None
        assert isinstance(replies[4], redis.ResponseError)  # WRONGTYPE: not a lookup result
    async with r.pipeline(transaction=False) as pipe:
        pipe.get("p:a").incr("p:s")
        with pytest.raises(redis.ResponseError):
            await pipe.execute()
    async with r.pipeline() as pipe:
        await pipe.watch("w:k")
        assert await pipe.get("w:k") is None
        pipe.multi()
        pipe.set("w:k", "1")
        assert await pipe.execute() == [True]
    await r.aclose()

    text = handle.render().decode()
    assert ops(text, "MULTI") == 2
    assert ops(text, "PIPELINE") == 2
    assert ops(text, "PIPELINE", error_type="redis.exceptions.ResponseError") == 1
    assert ops(text, "MULTI", error_type="redis.exceptions.ResponseError") == 0
    assert (ops(text, "GET"), ops(text, "WATCH"), ops(text, "SET")) == (1, 1, 1)
    assert cache(text, "hit") == 2  # MULTI: GET, MGET 1
    assert cache(text, "miss") == 5  # MULTI: MGET 2; PIPELINE: GET, HGET; WATCH: GET


def test_command_error_is_recorded_and_raised(setup: Setup, port: int) -> None:
    handle = setup()
    with redis.Redis(port=port) as r:
        r.set("e:secret", "abc")
        with pytest.raises(redis.ResponseError, match="not an integer"):
            r.incr("e:secret")  # redis-py sends INCRBY e:secret 1
        with pytest.raises(redis.ResponseError, match="not an integer"):
            r.execute_command("INCR", "e:secret")
        with pytest.raises(redis.ResponseError, match="unknown command"):
            r.execute_command("NOSUCHCOMMAND", "e:secret")
    text = handle.render().decode()
    assert ops(text, "INCRBY", error_type="redis.exceptions.ResponseError") == 1
    assert ops(text, "INCR", error_type="redis.exceptions.ResponseError") == 1
    assert ops(text, "INCR") == 1  # no success series
    assert ops(text, "OTHER", error_type="redis.exceptions.ResponseError") == 1
    assert "NOSUCHCOMMAND" not in text and "secret" not in text


def failures(text: str) -> dict[tuple[str, str, str | None], float]:
    """(db.operation.name, error.type, db.response.status_code) -> failed commands."""
    out: dict[tuple[str, str, str | None], float] = {}
    for labels in series(text, COUNT):
        if "error_type" in labels:
            key = (
                labels["db_operation_name"],
                labels["error_type"],
                labels.get("db_response_status_code"),
            )
            out[key] = value(text, COUNT, **labels)
    return out


def test_error_reply_code_is_the_status_code(setup: Setup, port: int) -> None:
    handle = setup()
    with redis.Redis(port=port) as r:
        r.set("s:string", "abc")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            r.lpush("s:string", "v")
        with pytest.raises(redis.exceptions.NoScriptError):
            r.evalsha("0" * 40, 0)
        with pytest.raises(redis.ResponseError, match="not an integer"):
            r.incr("s:string")
        with pytest.raises(redis.ResponseError, match="unknown command"):
            r.execute_command("NOSUCHCOMMAND")
        with r.pipeline(transaction=True) as pipe, pytest.raises(redis.ResponseError):
            pipe.set("s:other", "1").lpush("s:string", "v").execute()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0)).get("k")
    assert failures(handle.render().decode()) == {
        ("LPUSH", "redis.exceptions.ResponseError", "WRONGTYPE"): 1,
        ("EVALSHA", "redis.exceptions.NoScriptError", "NOSCRIPT"): 1,
        ("INCRBY", "redis.exceptions.ResponseError", "ERR"): 1,
        ("OTHER", "redis.exceptions.ResponseError", "ERR"): 1,
        ("MULTI", "redis.exceptions.ResponseError", "WRONGTYPE"): 1,
        ("GET", "redis.exceptions.ConnectionError", None): 1,  # no reply, no code
    }


async def test_async_error_reply_code_is_the_status_code(setup: Setup, port: int) -> None:
    handle = setup()
    r = redis.asyncio.Redis(port=port)
    await r.set("s:string", "abc")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        await r.hget("s:string", "f")
    async with r.pipeline(transaction=False) as pipe:
        pipe.get("s:string").lpush("s:string", "v")
        with pytest.raises(redis.ResponseError):
            await pipe.execute()
    await r.aclose()
    assert failures(handle.render().decode()) == {
        ("HGET", "redis.exceptions.ResponseError", "WRONGTYPE"): 1,
        ("PIPELINE", "redis.exceptions.ResponseError", "WRONGTYPE"): 1,
    }


def test_connection_error_is_recorded_and_raised(setup: Setup) -> None:
    handle = setup()
    closed = free_port()
    r = redis.Redis(port=closed, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2)
    with pytest.raises(redis.ConnectionError) as raised:
        r.get("k")
    assert type(raised.value) is redis.ConnectionError
    text = handle.render().decode()
    assert ops(text, "GET", error_type="redis.exceptions.ConnectionError") == 1
    assert cache(text, "miss") + cache(text, "hit") == 0


async def test_async_connection_error_is_recorded_and_raised(
    setup: Setup,
) -> None:
    handle = setup()
    retry = redis.asyncio.retry.Retry(NoBackoff(), 0)
    r = redis.asyncio.Redis(port=free_port(), retry=retry, socket_connect_timeout=2)
    with pytest.raises(redis.ConnectionError) as raised:
        await r.mget("a", "b")
    assert type(raised.value) is redis.ConnectionError
    await r.aclose()
    text = handle.render().decode()
    assert ops(text, "MGET", error_type="redis.exceptions.ConnectionError") == 1


def test_timeout_is_recorded_and_raised(setup: Setup, port: int) -> None:
    handle = setup()
    r = redis.Redis(port=port, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.TimeoutError):
        r.blpop(["t:empty"], timeout=5)
    r.close()
    text = handle.render().decode()
    assert ops(text, "BLPOP", error_type="redis.exceptions.TimeoutError") == 1


async def test_clients_created_before_setup_are_measured(setup: Setup, port: int) -> None:
    sync_client = redis.Redis(port=port)
    async_client = redis.asyncio.Redis(port=port)
    assert sync_client.get("k") is None  # before setup: not counted anywhere
    handle = setup()
    assert sync_client.get("k") is None
    assert await async_client.get("k") is None
    sync_client.close()
    await async_client.aclose()
    text = handle.render().decode()
    assert ops(text, "GET") == 2
    assert cache(text, "miss") == 2


@pytest.mark.usefixtures("global_metrics")  # record_cache_lookup() finds the global handle
def test_cache_helper_shares_the_redis_counter(port: int) -> None:
    handle = setup_metrics(prometheus_host="127.0.0.1", prometheus_port=0)
    with redis.Redis(port=port) as r:
        r.set("k", "v")
        r.get("k")
    record_cache_lookup("redis", hit=True)
    text = handle.render().decode()
    assert cache(text, "hit") == 2
    assert text.count("# TYPE cache_requests_total counter") == 1


def test_disabled_records_nothing(make_handle: MakeHandle, port: int) -> None:
    originals = methods()
    handle = make_handle(
        prometheus_host="127.0.0.1", prometheus_port=0, disabled_instrumentations="redis"
    )
    assert methods() == originals
    with redis.Redis(port=port) as r:
        assert r.get("k") is None
    text = handle.render().decode()
    assert ops(text, "GET") == 0
    assert cache(text, "miss") == 0


def test_shutdown_restores_the_original_methods(setup: Setup, port: int) -> None:
    originals = [cls.__dict__[name] for cls, name in PATCHED]
    handle = setup()
    assert all(
        cls.__dict__[name] is not o for (cls, name), o in zip(PATCHED, originals, strict=True)
    )
    handle.shutdown()
    assert all(cls.__dict__[name] is o for (cls, name), o in zip(PATCHED, originals, strict=True))

    handle = setup()  # instrumented once again, not twice
    with redis.Redis(port=port) as r:
        assert r.get("k") is None
    text = handle.render().decode()
    assert ops(text, "GET") == 1
    assert cache(text, "miss") == 1
