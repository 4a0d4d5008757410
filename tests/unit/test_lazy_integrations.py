"""`setup_metrics()` imports no integration's library: it instruments those the application has
imported, and one imported later when it is imported (its import hook). Each test runs in a
fresh interpreter, whose `sys.modules` holds only what the code under test imported.
`otel-kit run`'s side of the same rule: tests/integration/test_startup_imports.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.exposition import value

ROOT = Path(__file__).parents[2]
# Every integration's library, and what FastAPI itself might pull in (it imports none of them).
LIBRARIES = (
    "aiohttp",
    "asyncpg",
    "django",
    "flask",
    "httpx",
    "psycopg",
    "psycopg_pool",
    "redis",
    "requests",
    "sqlalchemy",
    "urllib3",
)
SETUP = f"""
import sys
from fastapi import FastAPI
LIBRARIES = {LIBRARIES!r}
assert [name for name in LIBRARIES if name in sys.modules] == []  # FastAPI imports none
from otel_kit import setup_metrics
handle = setup_metrics(FastAPI())
"""


def python(code: str) -> str:
    """Run `code` in a fresh interpreter; its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_setup_imports_no_integration_library() -> None:
    code = SETUP + "print(sorted(name for name in LIBRARIES if name in sys.modules))"
    assert python(code) == "[]\n"


def test_sqlalchemy_imported_after_setup_is_measured() -> None:
    code = SETUP + (
        "def query():\n"  # imported lazily, inside a function, as some applications do
        "    import sqlalchemy\n"
        "    engine = sqlalchemy.create_engine('sqlite://')\n"  # created after the import
        "    with engine.connect() as connection:\n"
        "        connection.execute(sqlalchemy.text('SELECT 1'))\n"
        "query()\n"
        "print(handle.render().decode())\n"
    )
    text = python(code)
    select = {"db_system_name": "sqlite", "db_operation_name": "SELECT"}
    assert value(text, "db_client_operation_duration_seconds_count", **select) == 1, text


def test_httpx_imported_after_setup_is_measured() -> None:
    code = SETUP + (
        "import http.server, threading\n"
        "class Ok(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200)\n"
        "        self.send_header('Content-Length', '0')\n"
        "        self.end_headers()\n"
        "    def log_message(self, *args):\n"
        "        pass\n"
        "server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Ok)\n"
        "threading.Thread(target=server.serve_forever, daemon=True).start()\n"
        "import httpx\n"
        "assert httpx.get(f'http://127.0.0.1:{server.server_port}/').status_code == 200\n"
        "server.shutdown()\n"
        "server.server_close()\n"
        "print(handle.render().decode())\n"
    )
    text = python(code)
    call = {"http_request_method": "GET", "server_address": "127.0.0.1"}
    call["http_response_status_code"] = "200"
    assert value(text, "http_client_request_duration_seconds_count", **call) == 1, text


def test_libraries_imported_by_threads_at_once_are_each_instrumented_once() -> None:
    code = SETUP + (
        "import threading\n"
        "names = ('sqlalchemy', 'redis', 'httpx', 'urllib3')\n"
        "threads = [threading.Thread(target=__import__, args=(name,)) for name in names]\n"
        "for thread in threads: thread.start()\n"
        "for thread in threads: thread.join()\n"
        "print([n for n in names if f'otel_kit._instrumentation.{n}' not in sys.modules])\n"
        "import sqlalchemy\n"
        "with sqlalchemy.create_engine('sqlite://').connect() as connection:\n"
        "    connection.execute(sqlalchemy.text('SELECT 1'))\n"
        "print(handle.render().decode())\n"
    )
    missing, text = python(code).split("\n", 1)
    assert missing == "[]"
    select = {"db_system_name": "sqlite", "db_operation_name": "SELECT"}
    assert value(text, "db_client_operation_duration_seconds_count", **select) == 1, text


def test_disabled_and_after_shutdown_nothing_is_instrumented_on_import() -> None:
    # On the app, not the default metrics port another suite running at once may hold.
    disabled = "setup_metrics(FastAPI(), disabled_instrumentations='httpx')"
    code = SETUP.replace("setup_metrics(FastAPI())", disabled) + (
        "import httpx\n"
        "handle.shutdown()\n"
        "import sqlalchemy\n"
        f"handle = {disabled}\n"  # a new setup instruments what is imported by now
        "handle.shutdown()\n"
        "import redis\n"
        "names = ('httpx', 'sqlalchemy', 'redis')\n"
        "print([n for n in names if f'otel_kit._instrumentation.{n}' in sys.modules])\n"
        "print(sum(type(f).__name__ == 'PostImportHook' for f in sys.meta_path))\n"
    )
    assert python(code) == "['sqlalchemy']\n1\n"  # one hook, however many setups
