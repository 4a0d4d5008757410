"""The integrations: one registry, read by config (the names `disabled_instrumentations`
accepts), by setup (`_context.instrument_all`) and by the import hooks.

An integration with triggers is instrumented only once the application has imported one of
them: at setup if it is imported already, else by an import hook (`_import_hook`: setup's, or
`otel-kit run`'s) calling `MetricsHandle.instrument_imported` right after the import. otel-kit
never imports a library the application does not use, which would cost each process its import
time and memory.

Standard library only: `otel_kit.autoinstrument` reads it in every Python process `otel-kit run`
starts, before anything loads the SDK. A NamedTuple, not a dataclass: `dataclasses` imports
`inspect`, ~4 ms more in each of those processes.

An integration module imports its library at the top (so a missing library is an ImportError
naming it) and defines `instrument(integration) -> Callable[[], None]`, which starts measuring every
client/engine of that library, old and new, and returns a function that stops it.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["INTEGRATIONS", "TRIGGERS", "Integration"]


class Integration(NamedTuple):
    name: str  # as in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
    # Defines instrument(); None: measured elsewhere (fastapi: by instrument_app()'s middleware;
    # requests: by the urllib3 module, which its name in disabled_instrumentations narrows).
    module: str | None
    library: str  # the top-level import that fails when the library is missing
    extra: str  # pip install 'otel-kit[<extra>]' installs the library
    # Instrumented once one of these is imported (under `otel-kit run`, importing one also
    # sets up metrics); none: instrumented at setup.
    triggers: tuple[str, ...]


INTEGRATIONS: tuple[Integration, ...] = (
    Integration("fastapi", None, "starlette", "fastapi", ("starlette.applications",)),
    # `otel-kit run` patches flask.Flask on its import (autoinstrument), as Starlette.
    Integration("flask", None, "flask", "flask", ("flask",)),
    # ORM statements, cache lookups, route templates (the HTTP middleware measures requests).
    Integration("django", "otel_kit._instrumentation.django", "django", "django", ("django",)),
    Integration(
        "sqlalchemy",
        "otel_kit._instrumentation.sqlalchemy",
        "sqlalchemy",
        "sqlalchemy",
        ("sqlalchemy",),
    ),
    # Without SQLAlchemy (the connections SQLAlchemy's pools hold are measured there, once).
    Integration("asyncpg", "otel_kit._instrumentation.asyncpg", "asyncpg", "asyncpg", ("asyncpg",)),
    Integration("psycopg", "otel_kit._instrumentation.psycopg", "psycopg", "psycopg", ("psycopg",)),
    Integration(
        "psycopg_pool",
        "otel_kit._instrumentation.psycopg_pool",
        "psycopg_pool",
        "psycopg",
        ("psycopg_pool",),
    ),
    Integration("redis", "otel_kit._instrumentation.redis", "redis", "redis", ("redis",)),
    Integration("httpx", "otel_kit._instrumentation.httpx", "httpx", "httpx", ("httpx",)),
    Integration("urllib3", "otel_kit._instrumentation.urllib3", "urllib3", "urllib3", ("urllib3",)),
    Integration("requests", None, "requests", "requests", ("requests",)),
    Integration("aiohttp", "otel_kit._instrumentation.aiohttp", "aiohttp", "aiohttp", ("aiohttp",)),
    # Process metrics are read at scrape time: importing psutil is no reason to set up.
    Integration("runtime", "otel_kit._instrumentation.runtime", "psutil", "runtime", ()),
)

# Every integration's triggers: the modules whose import the hooks watch.
TRIGGERS = frozenset(name for entry in INTEGRATIONS for name in entry.triggers)
