"""What every integration module shares: its context, the `error.type` and `server.address`
rules, and the loop that instruments each enabled one at setup."""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider

from otel_kit._instrumentation import INTEGRATIONS, Integration
from otel_kit._instruments import FastHistogram, FastInstruments, FastSum
from otel_kit.catalogue import DB_CLIENT_OPERATION_DURATION, MetricSpec
from otel_kit.config import Settings

__all__ = [
    "MAX_HOST_LENGTH",
    "OVERLONG_HOST",
    "IntegrationContext",
    "error_type",
    "instrument_all",
    "server_address",
]

_log = logging.getLogger("otel_kit")

# A DNS name has at most 255 octets: a longer host is no name a lookup could reach, only
# something that makes labels (and so every scrape) as large as the caller likes.
MAX_HOST_LENGTH = 255
OVERLONG_HOST = "_OTHER"  # as for unknown HTTP methods: one series for all of them


@dataclass(frozen=True)
class IntegrationContext:
    """What an integration gets: settings, the provider (for SDK instruments) and fast ones."""

    settings: Settings
    meter_provider: MeterProvider
    fast: FastInstruments

    def histogram(self, spec: MetricSpec) -> FastHistogram:
        """A duration histogram with the configured buckets and cardinality limit (DB
        operations: db_duration_buckets, semconv's DB advice by default)."""
        settings = self.settings
        db = spec.name == DB_CLIENT_OPERATION_DURATION.name
        buckets = settings.db_duration_buckets if db else settings.duration_buckets
        return self.fast.histogram(spec, buckets, settings.cardinality_limit)

    def sum(self, spec: MetricSpec) -> FastSum:
        return self.fast.sum(spec, self.settings.cardinality_limit)


def error_type(exc: BaseException) -> str:
    """`error.type` for an exception, the same rule in every integration: semconv's fully
    qualified class name (`httpx.ConnectError`, `redis.exceptions.ResponseError`); a builtin
    keeps its bare name (`ValueError`, `TimeoutError`)."""
    cls: type = type(exc)  # a type, hashable (mypy takes type[BaseException] for unhashable)
    return _class_name(cls)


@functools.lru_cache(maxsize=1024)  # per class, once; bounded for classes made at run time
def _class_name(cls: type) -> str:
    """The module as the class declares it (libraries set their public one: httpx's classes
    say `httpx`), except a private module (`h11._util`, `concurrent.futures._base`): the
    public package before it when the class is there by the same name (`h11.RemoteProtocolError`),
    so the label is what `except` is written with and survives the library moving its insides.
    Only modules already imported are looked at; otherwise the full private path stays."""
    module, name = cls.__module__, cls.__qualname__
    if module == "builtins":
        return name
    parts = module.split(".")
    private = next((i for i, part in enumerate(parts) if part.startswith("_")), None)
    if private:  # 0 (`_pytest.outcomes`): no public package to name
        public = ".".join(parts[:private])
        found: Any = sys.modules.get(public)
        for attribute in name.split("."):
            found = getattr(found, attribute, None)
        if found is cls:
            module = public
    return f"{module}.{name}"


def server_address(host: str) -> str:
    """`server.address` for a host: itself, or `_OTHER` when it is longer than 255 characters.

    One fixed value rather than a truncated name: a cut name is a wrong one, and overlong
    names (generated or hostile) then share one series instead of each making its own.
    The cardinality limit bounds the number of series; this bounds their size.
    """
    return host if len(host) <= MAX_HOST_LENGTH else OVERLONG_HOST


def instrument_all(
    integration: IntegrationContext, entries: Iterable[Integration] = INTEGRATIONS
) -> list[Callable[[], None]]:
    """Instrument every installed, enabled integration of `entries` that has a module; never
    raises."""
    undo: list[Callable[[], None]] = []
    for entry in entries:
        if entry.module is None or entry.name in integration.settings.disabled_instrumentations:
            continue
        try:
            module = importlib.import_module(entry.module)
        except ImportError as exc:
            if exc.name is None or exc.name.split(".")[0] != entry.library:
                _log.exception("otel-kit: %s instrumentation failed to load", entry.name)
            else:
                _log.info(
                    "otel-kit: %s not installed, not instrumented (pip install 'otel-kit[%s]')",
                    entry.library,
                    entry.extra,
                )
            continue
        try:
            undo.append(module.instrument(integration))
        except Exception:
            _log.exception(
                "otel-kit: %s instrumentation failed; the application is unaffected", entry.name
            )
    return undo
