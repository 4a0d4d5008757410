"""Django cache hits and misses in `cache.requests`, without swapping `CACHES`: part of the
Django integration (`django.py` instruments it).

`get`, `get_many` and `get_or_set` of every `BaseCache` subclass Django ships (locmem, db,
file, redis, memcached, dummy) and of those imported before setup, wrapped at class level;
`cache.name` is the `CACHES` alias (`caches[alias]` names the backend it makes; one made
otherwise counts as `django`). The rule: a `get` is a hit when the key is present, whatever its
value (None too: a sentinel default tells them apart), else a miss; `get_many` is one lookup
per key (`len(set(keys))`); `get_or_set` is one lookup (hit: present; its set and re-read are
none). Calls a backend makes inside these (the db backend's `get_many` for a `get`) are not
lookups again; neither are `has_key`, `incr`, `touch`. The async methods run the sync ones
(`aget` is `get` in a thread): counted there.

A `RedisCache` counts here only: the connection pools of the redis-py clients its
`RedisCacheClient.get_client()` returns are marked as no cache (as
`otel_kit.cache.redis_cache(client, None)` does), so the Redis integration still times their
commands but does not count their GETs as `cache_name="redis"` too.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from django.core.cache import CacheHandler

# Imported so that Django's own backends are among BaseCache's subclasses.
from django.core.cache.backends import db, dummy, filebased, locmem, memcached  # noqa: F401
from django.core.cache.backends import redis as redis_backend
from django.core.cache.backends.base import BaseCache

from otel_kit import catalogue
from otel_kit._instrumentation._context import IntegrationContext
from otel_kit._instrumentation._sql import suspended
from otel_kit._support import Patches, report_failure
from otel_kit.cache import _REDIS_CACHE_NAME

__all__ = ["Wrap", "cache_targets", "name_current_caches"]

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]
_ALIAS = "_otel_kit_cache_alias"  # on a cache backend: its CACHES alias
_UNNAMED_CACHE = "django"

# Inside a counted cache call: the calls the backend makes within it are no lookups of their
# own. The list gets what `get`s inside a `get_or_set` found (its first one is the lookup).
_IN_LOOKUP: ContextVar[list[bool] | None] = ContextVar("otel_kit_django_cache", default=None)
_MISSING = object()


def _cache_classes() -> Iterator[type[BaseCache]]:
    """BaseCache and every subclass imported now (Django's own are, above)."""
    seen: set[type] = set()
    todo: list[type[BaseCache]] = [BaseCache]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            yield cls
            todo.extend(cls.__subclasses__())


def _alias(cache: Any) -> str:
    alias: str | None = cache.__dict__.get(_ALIAS)
    return _UNNAMED_CACHE if alias is None else alias


class _Caches:
    def __init__(self, integration: IntegrationContext, patches: Patches) -> None:
        self.patches = patches
        self.requests = integration.sum(catalogue.CACHE_REQUESTS)

    def count(self, cache: Any, hits: int, misses: int) -> None:
        try:
            name = _alias(cache)
            if hits:
                self.requests.add(hits, (name, "hit"))
            if misses:
                self.requests.add(misses, (name, "miss"))
        except Exception:
            report_failure("Django cache")

    def _off(self) -> bool:
        return not self.patches.active or suspended()

    def wrap_get(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def get(cache: Any, key: Any, default: Any = None, version: Any = None) -> Any:
            outer = _IN_LOOKUP.get()
            if outer is None and self._off():
                return original(cache, key, default, version)
            # The sentinel tells a stored value (None too) from an absent key.
            token = _IN_LOOKUP.set([])
            try:
                value = original(cache, key, _MISSING, version)
            finally:
                _IN_LOOKUP.reset(token)
            found = value is not _MISSING
            if outer is None:
                self.count(cache, int(found), int(not found))
            else:
                outer.append(found)
            return value if found else default

        return get

    def wrap_get_many(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def get_many(cache: Any, keys: Any, version: Any = None) -> Any:
            if _IN_LOOKUP.get() is not None or self._off():
                return original(cache, keys, version)
            keys = list(keys)  # an iterator would be used up by the backend
            token = _IN_LOOKUP.set([])
            try:
                found = original(cache, keys, version)
            finally:
                _IN_LOOKUP.reset(token)
            hits = len(found)
            self.count(cache, hits, len(set(keys)) - hits)
            return found

        return get_many

    def wrap_get_or_set(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def get_or_set(cache: Any, key: Any, *args: Any, **kwargs: Any) -> Any:
            if _IN_LOOKUP.get() is not None or self._off():
                return original(cache, key, *args, **kwargs)
            seen: list[bool] = []
            token = _IN_LOOKUP.set(seen)
            try:
                value = original(cache, key, *args, **kwargs)
            finally:
                _IN_LOOKUP.reset(token)
            if seen:
                self.count(cache, int(seen[0]), int(not seen[0]))
            return value

        return get_or_set

    def targets(self) -> list[tuple[Any, str, Wrap]]:
        wraps = {
            "get": self.wrap_get,
            "get_many": self.wrap_get_many,
            "get_or_set": self.wrap_get_or_set,
        }
        return [
            (cls, name, wrap)
            for cls in _cache_classes()
            for name, wrap in wraps.items()
            if name in cls.__dict__
        ]


def _wrap_create_connection(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_connection(handler: Any, alias: str) -> Any:
        cache = original(handler, alias)
        with contextlib.suppress(Exception):  # a backend with __slots__: counted as "django"
            cache.__dict__[_ALIAS] = alias
        return cache

    return create_connection


def _wrap_get_client(patches: Patches) -> Wrap:
    """RedisCacheClient.get_client: its clients' pools are no cache of the Redis integration's
    (their lookups count as the Django cache's)."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def get_client(cache_client: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(cache_client, *args, **kwargs)
            if patches.active:
                pool = getattr(client, "connection_pool", None)
                if pool is not None and _REDIS_CACHE_NAME not in pool.__dict__:
                    pool.__dict__[_REDIS_CACHE_NAME] = None
            return client

        return get_client

    return wrap


def name_current_caches() -> None:
    """Name the backends this thread made before setup."""
    from django.core.cache import caches

    try:
        for alias in caches.settings:
            cache = getattr(caches._connections, alias, None)
            if cache is not None:
                cache.__dict__.setdefault(_ALIAS, alias)
    except Exception:  # settings not configured yet: no cache exists either
        pass


def cache_targets(integration: IntegrationContext, patches: Patches) -> list[tuple[Any, str, Wrap]]:
    """What `patches` wraps to count the lookups of every Django cache backend."""
    caches = _Caches(integration, patches)
    return [
        (CacheHandler, "create_connection", _wrap_create_connection),
        (redis_backend.RedisCacheClient, "get_client", _wrap_get_client(patches)),
        *caches.targets(),
    ]
