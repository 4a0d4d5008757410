"""Shared fixtures: a fresh otel-kit setup per test, and exposition parsing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.metrics import _internal as otel_metrics_internal
from prometheus_client.parser import text_string_to_metric_families

import otel_kit._setup


def reset_otel_globals() -> None:
    """Forget the global MeterProvider so the next setup_metrics() can set its own.

    The OTel API allows setting it once per process; contrib's test utilities reset these
    same two private globals.
    """
    otel_metrics_internal._METER_PROVIDER_SET_ONCE._done = False
    otel_metrics_internal._METER_PROVIDER = None


@pytest.fixture(autouse=True)
def fresh_otel_kit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import os

    for name in list(os.environ):
        if name.startswith(("OTEL_", "FASTAPI_OTEL")):
            monkeypatch.delenv(name)
    reset_otel_globals()
    yield
    handle = otel_kit._setup._current
    if handle is not None:
        handle.shutdown()
    reset_otel_globals()


Labels = frozenset[tuple[str, str]]


def samples(text: str) -> dict[tuple[str, Labels], float]:
    """Exposition text -> {(sample name, labels): value}."""
    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples(text).items() if n == name and wanted <= ls)


def series(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of the samples called `name`."""
    return [dict(ls) for (n, ls) in samples(text) if n == name]
