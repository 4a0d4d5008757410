"""The integration registry: on by default, off on request, one log line for a missing library.
What is imported when: tests/unit/test_lazy_integrations.py."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra installs tomli there
    import tomli as tomllib

import httpx
import pytest

from otel_kit._instrumentation import INTEGRATIONS
from tests.exposition import series
from tests.handles import MakeHandle

HTTPX_SEND = httpx.HTTPTransport.handle_request


def test_every_integration_is_on_by_default(make_handle: MakeHandle) -> None:
    make_handle()
    assert httpx.HTTPTransport.handle_request is not HTTPX_SEND
    assert [i.name for i in INTEGRATIONS if i.module] == [
        "django",
        "sqlalchemy",
        "asyncpg",
        "psycopg",
        "psycopg_pool",
        "redis",
        "httpx",
        "urllib3",
        "aiohttp",
        "runtime",
    ]


def test_missing_library_logs_one_line_and_the_rest_still_works(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, make_handle: MakeHandle
) -> None:
    # `import psutil` now raises ImportError(name="psutil"), as when it is not installed: the
    # runtime integration has no trigger, so setup tries it. A library with one (redis) the
    # application has not imported is not tried, and not mentioned.
    monkeypatch.setitem(sys.modules, "psutil", None)
    monkeypatch.delitem(sys.modules, "otel_kit._instrumentation.runtime", raising=False)
    monkeypatch.setitem(sys.modules, "redis", None)
    with caplog.at_level(logging.INFO, logger="otel_kit"):
        handle = make_handle()
    lines = [r for r in caplog.records if "installed" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        "otel-kit: psutil not installed, not instrumented (pip install 'otel-kit[runtime]')"
    ]
    assert lines[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert httpx.HTTPTransport.handle_request is not HTTPX_SEND  # the others are on
    assert series(handle.render().decode(), "process_memory_usage_bytes") == []


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch, make_handle: MakeHandle) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "httpx,runtime")
    handle = make_handle()
    assert httpx.HTTPTransport.handle_request is HTTPX_SEND
    assert series(handle.render().decode(), "process_memory_usage_bytes") == []


def test_the_registry_agrees_with_its_modules_and_extras() -> None:
    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    for entry in INTEGRATIONS:
        if entry.module is not None:
            assert callable(importlib.import_module(entry.module).instrument), entry.name
        assert any(req.startswith(entry.library) for req in extras[entry.extra]), entry.name
