"""redis-py metrics: command durations and cache hits/misses (contrib's instrumentor has none).

Wrapped at the class level, so clients created before setup are measured too:

- `Redis.execute_command` (sync and asyncio): the public method every command method of a
  client calls, retries included. Below it (`_execute_command`, connections, parsers) the code
  is private and has been reorganised between redis-py releases.
- `Pipeline.immediate_execute_command`: the commands a pipeline sends at once (WATCH, reads
  between WATCH and MULTI, script loading); `Pipeline.execute_command` only queues.
- `Pipeline.execute`: one call per `execute()` the application made, retries included, and
  the last point where the queued commands and the transaction flag are still readable.
  `_execute_transaction`/`_execute_pipeline` are private and run once per retry attempt (a
  retried success would look like a failure plus a success).

`db.client.operation.duration` gets one observation per command: `db.operation.name` is the
command (upper case; the first word of container commands, `CONFIG GET` -> `CONFIG`) when it is
in a fixed allow-list, else `OTHER`, so keys and arguments never become labels. A pipeline is
ONE observation named `MULTI` when it runs as a transaction, else `PIPELINE`; it carries
`error.type` only when `execute()` raises (with `raise_on_error=False` per-command errors stay in
its results). Where it went, from the client's connection pool as semconv says for Redis:
`db.namespace` (the db index), `server.address` (host, or the Unix socket's path) and
`server.port` (TCP only); a Sentinel pool finds its server per connection, so it has neither.
A failed command carries `db.response.status_code`, the code of Redis's error reply
(`WRONGTYPE`, `NOSCRIPT`, `ERR`), none for connection errors and timeouts.
Several clients thus stay apart, as long as they differ in server or db index.

`cache.requests` counts lookups by result: GET, GETEX, GETDEL, HGET (hit when the reply is not
nil), MGET, HMGET, HGETEX, HGETDEL (one per key or field), HGETALL (hit when the hash exists).
Lookups queued in a pipeline count from `execute()`'s results, skipping commands whose result
is an error; nothing counts when `execute()` raises. EXISTS is not a lookup: it fetches nothing,
and `EXISTS` then `GET` would count one lookup twice.

Not every GET is a cache lookup (a job queue polls job status with GET), so `cache.name` is
per connection pool: what `otel_kit.cache.redis_cache(client, name)` set on it (None: no
cache, nothing counted), else by the setting `redis_cache`: `all` (the default, as before:
`"redis"`), `named` (nothing) or `none` (no Redis lookup counts, named or not).
RedisCluster and PubSub use other code paths and are not measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio.client
import redis.client

from otel_kit._instrumentation._context import IntegrationContext, server_address
from otel_kit._instrumentation._db import Target, redis_failure
from otel_kit._instrumentation._sql import suspended
from otel_kit._instruments import FastHistogram, FastSum
from otel_kit._support import Patches, report_failure, timed
from otel_kit.cache import _REDIS_CACHE_NAME
from otel_kit.catalogue import CACHE_REQUESTS, DB_CLIENT_OPERATION_DURATION

__all__ = ["instrument"]


# Redis 7.0 commands plus later core additions (7.2-8.x) and the JSON/search modules.
_COMMAND_NAMES = """
ACL APPEND ASKING AUTH BGREWRITEAOF BGSAVE BITCOUNT BITFIELD BITFIELD_RO BITOP BITPOS BLMOVE BLMPOP
BLPOP BRPOP BRPOPLPUSH BZMPOP BZPOPMAX BZPOPMIN CLIENT CLUSTER COMMAND CONFIG COPY DBSIZE DEBUG
DECR DECRBY DEL DELEX DIGEST DISCARD DUMP ECHO EVAL EVAL_RO EVALSHA EVALSHA_RO EXEC EXISTS EXPIRE
EXPIREAT EXPIRETIME FAILOVER FCALL FCALL_RO FLUSHALL FLUSHDB FUNCTION GEOADD GEODIST GEOHASH GEOPOS
GEORADIUS GEORADIUS_RO GEORADIUSBYMEMBER GEORADIUSBYMEMBER_RO GEOSEARCH GEOSEARCHSTORE GET GETBIT
GETDEL GETEX GETRANGE GETSET HDEL HELLO HEXISTS HEXPIRE HEXPIREAT HEXPIRETIME HGET HGETALL HGETDEL
HGETEX HINCRBY HINCRBYFLOAT HKEYS HLEN HMGET HMSET HPERSIST HPEXPIRE HPEXPIREAT HPEXPIRETIME HPTTL
HRANDFIELD HSCAN HSET HSETEX HSETNX HSTRLEN HTTL HVALS INCR INCRBY INCRBYFLOAT INFO KEYS LASTSAVE
LATENCY LCS LINDEX LINSERT LLEN LMOVE LMPOP LOLWUT LPOP LPOS LPUSH LPUSHX LRANGE LREM LSET LTRIM
MEMORY MGET MIGRATE MODULE MONITOR MOVE MSET MSETEX MSETNX MULTI OBJECT PERSIST PEXPIRE PEXPIREAT
PEXPIRETIME PFADD PFCOUNT PFMERGE PING PSETEX PSUBSCRIBE PTTL PUBLISH PUBSUB PUNSUBSCRIBE QUIT
RANDOMKEY READONLY READWRITE RENAME RENAMENX REPLICAOF RESET RESTORE ROLE RPOP RPOPLPUSH RPUSH
RPUSHX SADD SAVE SCAN SCARD SCRIPT SDIFF SDIFFSTORE SELECT SENTINEL SET SETBIT SETEX SETNX SETRANGE
SHUTDOWN SINTER SINTERCARD SINTERSTORE SISMEMBER SLAVEOF SLOWLOG SMEMBERS SMISMEMBER SMOVE SORT
SORT_RO SPOP SPUBLISH SRANDMEMBER SREM SSCAN SSUBSCRIBE STRLEN SUBSCRIBE SUBSTR SUNION SUNIONSTORE
SUNSUBSCRIBE SWAPDB TIME TOUCH TTL TYPE UNLINK UNSUBSCRIBE UNWATCH VADD VCARD VDIM VEMB VGETATTR
VINFO VLINKS VRANDMEMBER VREM VSETATTR VSIM WAIT WAITAOF WATCH XACK XACKDEL XADD XAUTOCLAIM XCLAIM
XDEL XDELEX XGROUP XINFO XLEN XPENDING XRANGE XREAD XREADGROUP XREVRANGE XSETID XTRIM ZADD ZCARD
ZCOUNT ZDIFF ZDIFFSTORE ZINCRBY ZINTER ZINTERCARD ZINTERSTORE ZLEXCOUNT ZMPOP ZMSCORE ZPOPMAX
ZPOPMIN ZRANDMEMBER ZRANGE ZRANGEBYLEX ZRANGEBYSCORE ZRANGESTORE ZRANK ZREM ZREMRANGEBYLEX
ZREMRANGEBYRANK ZREMRANGEBYSCORE ZREVRANGE ZREVRANGEBYLEX ZREVRANGEBYSCORE ZREVRANK ZSCAN ZSCORE
ZUNION ZUNIONSTORE FT.AGGREGATE FT.SEARCH JSON.DEL JSON.GET JSON.MERGE JSON.MGET JSON.MSET JSON.SET
"""
_COMMANDS: dict[str, str] = {name: name for name in _COMMAND_NAMES.split()}


def _one(reply: Any) -> tuple[int, int]:
    return (0, 1) if reply is None else (1, 0)


def _each(reply: Any) -> tuple[int, int]:
    if not isinstance(reply, (list, tuple)):
        return (0, 0)
    misses = reply.count(None)
    return (len(reply) - misses, misses)


def _hash(reply: Any) -> tuple[int, int]:
    return (1, 0) if reply else (0, 1)  # Redis deletes a hash with its last field


# Lookup command -> its reply as (hits, misses).
_LOOKUPS: dict[str, Callable[[Any], tuple[int, int]]] = {
    "GET": _one,
    "GETEX": _one,
    "GETDEL": _one,
    "HGET": _one,
    "MGET": _each,
    "HMGET": _each,
    "HGETEX": _each,
    "HGETDEL": _each,
    "HGETALL": _hash,
}
# What an unnamed client's lookups count as, by the setting `redis_cache` (`none`: not looked up).
_UNNAMED = {"all": "redis", "named": None}


def _operation(command: Any) -> str:
    name = _COMMANDS.get(command)  # redis-py's own methods send upper-case str names
    if name is not None:
        return name
    if isinstance(command, bytes):
        command = command.decode("ascii", "replace")
    if isinstance(command, str) and command.strip():
        return _COMMANDS.get(command.split()[0].upper(), "OTHER")
    return "OTHER"


def _command(client: Any, *args: Any, **options: Any) -> tuple[Any, tuple[Any, ...]]:
    return client, args


# On a connection pool: its Target (db.namespace, server.address, server.port), read once per pool:
# ~0.4 µs less per command, and the server the application configured stays its name when
# redis-py's maintenance notifications move the pool's host for a while.
_TARGET = "_otel_kit_target"


def _target(pool: Any) -> Target:
    target: Target | None = pool.__dict__.get(_TARGET)
    if target is None:
        kwargs = pool.connection_kwargs
        path = kwargs.get("path")  # UnixDomainSocketConnection
        host = path or kwargs.get("host")
        address = None if host is None else server_address(str(host))
        port = None if path or host is None else kwargs.get("port", 6379)
        target = pool.__dict__[_TARGET] = Target("redis", str(kwargs.get("db", 0)), address, port)
    return target


def _key(pool: Any, operation: str, exc: BaseException | None) -> tuple[Any, ...]:
    """The duration's attributes, in catalogue order."""
    if exc is None:
        return _target(pool).key(operation)
    return _target(pool).key(operation, *redis_failure(exc))


class _Recorder:
    def __init__(
        self, duration: FastHistogram, requests: FastSum, patches: Patches, cache: str = "all"
    ) -> None:
        self._duration = duration
        self._requests = requests
        self._patches = patches  # inactive once undone: a wrapper someone wrapped stays, silent
        self._counting = cache != "none"
        self._unnamed = _UNNAMED.get(cache)

    def _failed(self) -> None:
        report_failure("Redis")

    def _cache_name(self, pool: Any) -> str | None:
        """The cache a lookup on `pool` counts in; None: none."""
        if not self._counting:
            return None
        name: str | None = pool.__dict__.get(_REDIS_CACHE_NAME, self._unnamed)
        return name

    def _lookup(self, cache_name: str, operation: str, reply: Any) -> None:
        count = _LOOKUPS.get(operation)
        if count is not None:
            hits, misses = count(reply)
            if hits:
                self._requests.add(hits, (cache_name, "hit"))
            if misses:
                self._requests.add(misses, (cache_name, "miss"))

    def command(
        self,
        call: tuple[Any, tuple[Any, ...]],
        elapsed: float,
        reply: Any,
        exc: BaseException | None,
    ) -> None:
        """One command: `call` is (client, command arguments)."""
        if not self._patches.active or suspended():  # suspended: in otel_kit.not_measured()
            return
        try:
            client, args = call
            pool = client.connection_pool
            operation = _operation(args[0]) if args else "OTHER"
            self._duration.record(elapsed, _key(pool, operation, exc))
            if exc is None and operation in _LOOKUPS:
                cache_name = self._cache_name(pool)
                if cache_name is not None:
                    self._lookup(cache_name, operation, reply)
        except Exception:
            self._failed()

    def pipeline(
        self,
        call: tuple[Any, Sequence[tuple[tuple[Any, ...], Any]], bool],
        elapsed: float,
        replies: Any,
        exc: BaseException | None,
    ) -> None:
        """One `execute()`: `call` is (pipeline, its queued commands, transaction or not)."""
        if not self._patches.active or suspended():  # suspended: in otel_kit.not_measured()
            return
        try:
            pipe, stack, transaction = call
            pool = pipe.connection_pool
            operation = "MULTI" if transaction else "PIPELINE"
            self._duration.record(elapsed, _key(pool, operation, exc))
            cache_name = None if exc is not None else self._cache_name(pool)
            if cache_name is not None:
                for (args, _options), reply in zip(stack, replies, strict=False):
                    if args and not isinstance(reply, Exception):
                        self._lookup(cache_name, _operation(args[0]), reply)
        except Exception:
            self._failed()

    def pipeline_state(self, pipe: Any, flag: str) -> tuple[Any, list[Any], bool] | None:
        """The pipeline, its queued commands and whether they run as a transaction; None = do
        not record."""
        try:
            stack: list[Any] = pipe.command_stack
            if not stack and not pipe.watching:
                return None  # execute() returns [] without a round trip
            return pipe, list(stack), bool(getattr(pipe, flag) or pipe.explicit_transaction)
        except Exception:
            self._failed()
            return None


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    patches = Patches()
    recorder = _Recorder(
        integration.histogram(DB_CLIENT_OPERATION_DURATION),
        integration.sum(CACHE_REQUESTS),
        patches,
        integration.settings.redis_cache,
    )

    def command(is_async: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return lambda original: timed(original, _command, recorder.command, is_async=is_async)

    def execute(flag: str, is_async: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def begin(pipe: Any, *args: Any, **kwargs: Any) -> Any:
            return recorder.pipeline_state(pipe, flag)

        return lambda original: timed(original, begin, recorder.pipeline, is_async=is_async)

    sync, aio = redis.client, redis.asyncio.client
    patches.apply(
        [
            (sync.Redis, "execute_command", command(False)),
            (sync.Pipeline, "immediate_execute_command", command(False)),
            (sync.Pipeline, "execute", execute("transaction", False)),
            (aio.Redis, "execute_command", command(True)),
            (aio.Pipeline, "immediate_execute_command", command(True)),
            (aio.Pipeline, "execute", execute("is_transaction", True)),
        ]
    )
    return patches.undo
