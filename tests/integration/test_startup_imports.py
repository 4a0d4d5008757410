"""`otel-kit run` imports an integration's library only when the application does (issue 19,
item 10): a process that never imports SQLAlchemy, Redis or httpx does not load them, and one
that imports SQLAlchemy late has its queries counted all the same. Real `otel-kit run`
processes; bench/startup.py measures what this saves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from otel_kit import autoinstrument
from otel_kit.config import Settings
from tests.exposition import value
from tests.integration.otel_kit_run import RUN_CLI, VENV_BIN
from tests.integration.processes import free_port, terminate

pytestmark = pytest.mark.integration

QUERIES = "db_client_operation_duration_seconds_count"
SELECT = {"db_operation_name": "SELECT", "db_system_name": "sqlite"}  # not the ROLLBACK at close
# Printed by the command at its exit: the loaded modules of interest, and whether it set up.
REPORT = (
    "import atexit, json, os, sys\n"
    "def report():\n"
    "    roots = {'sqlalchemy', 'redis', 'httpx', 'psutil', 'pydantic', 'opentelemetry'}\n"
    "    loaded = sorted({m.split('.')[0] for m in sys.modules} & roots)\n"
    "    setup = sys.modules.get('otel_kit._setup')\n"
    "    set_up = getattr(setup, '_current', None) is not None\n"
    "    where = os.environ.get('OTEL_KIT_MULTIPROC_DIR')\n"
    "    print('REPORT', json.dumps({'loaded': loaded, 'set_up': set_up, 'dir': where}))\n"
    "atexit.register(report)\n"
)

# The launcher's child: sets up (importing Starlette), so writes its files in the directory.
CHILD = "import starlette.applications, otel_kit._setup as s; assert s._current"


def otel_kit_run(*args: str, cwd: Path, stdin: int | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL")}
    env["PATH"] = VENV_BIN + os.pathsep + os.environ["PATH"]
    return subprocess.Popen(
        [sys.executable, str(RUN_CLI), "run", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=stdin,
    )


@pytest.mark.parametrize(
    ("options", "code", "set_up", "loaded"),
    [
        # Imports nothing otel-kit serves or measures: not set up at all, nothing loaded.
        ([], "pass", False, []),
        # Serves a port (or pushes): set up at once, with runtime metrics (psutil) only.
        (["--prometheus-port", "0"], "pass", True, ["opentelemetry", "psutil", "pydantic"]),
        (["--metrics-exporter", "console"], "pass", True, ["opentelemetry", "psutil", "pydantic"]),
        # A Starlette app: set up when it is imported; still no SQLAlchemy, Redis or httpx.
        ([], "import starlette.applications", True, ["opentelemetry", "psutil", "pydantic"]),
        # A launcher whose child sets up (and leaves its files): the launcher does not.
        (
            [],
            f"import subprocess; subprocess.run([sys.executable, '-c', {CHILD!r}], check=True)",
            False,
            [],
        ),
    ],
    ids=["python -c pass", "port", "push", "app", "launcher"],
)
def test_libraries_the_application_does_not_import_are_not_loaded(
    tmp_path: Path, options: list[str], code: str, set_up: bool, loaded: list[str]
) -> None:
    process = otel_kit_run(*options, "python", "-c", REPORT + code, cwd=tmp_path)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    line = next(line for line in stdout.splitlines() if line.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))
    assert report["loaded"] == loaded
    assert report["set_up"] is set_up
    # The run's data directory (with the prometheus exporter only) is gone.
    assert report["dir"] is None or not os.path.exists(report["dir"])
    assert (report["dir"] is None) == (options[:1] == ["--metrics-exporter"])
    assert "Traceback" not in stderr


# Imports SQLAlchemy only after otel-kit was set up (it serves the port from the start), runs 3
# queries, then waits for stdin to close: the test scrapes the port meanwhile.
LATE_IMPORT = """
import sys
assert "sqlalchemy" not in sys.modules
import sqlalchemy
engine = sqlalchemy.create_engine("sqlite://")
with engine.connect() as connection:
    for _ in range(3):
        connection.execute(sqlalchemy.text("SELECT 1"))
print("queried", flush=True)
sys.stdin.read()
"""


def test_a_library_imported_after_setup_is_instrumented(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "late.py").write_text(LATE_IMPORT)
    options = ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(port)]
    with otel_kit_run(*options, "python", "late.py", cwd=tmp_path, stdin=subprocess.PIPE) as run:
        try:
            assert run.stdout is not None and run.stdout.readline() == "queried\n"
            text, deadline = "", time.monotonic() + 30
            while value(text, QUERIES, **SELECT) < 3 and time.monotonic() < deadline:
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                except httpx.TransportError:
                    time.sleep(0.05)  # the port is served before the script runs: rarely
        finally:
            terminate(run)  # type: ignore[arg-type]
    assert value(text, QUERIES, **SELECT) == 3, text


# Nothing set up until SQLAlchemy is imported (no port, no app): that import sets up and
# instruments it; the script reads its own view (the run's data directory) after 3 queries.
SETUP_BY_IMPORT = """
import sys
assert "otel_kit._setup" not in sys.modules
import sqlalchemy
from otel_kit import _setup
engine = sqlalchemy.create_engine("sqlite://")
with engine.connect() as connection:
    for _ in range(3):
        connection.execute(sqlalchemy.text("SELECT 1"))
print(_setup._current.render().decode())
"""


def test_importing_a_library_sets_up_and_instruments_it(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(SETUP_BY_IMPORT)
    process = otel_kit_run("python", "job.py", cwd=tmp_path)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert value(stdout, QUERIES, **SELECT) == 3, stdout
    assert "Traceback" not in stderr


def test_the_settings_the_bootstrap_reads_are_config_names() -> None:
    """The bootstrap reads the port and exporter settings without loading otel_kit.config:
    its variable names must be those settings' own."""
    names = {
        field: list(info.validation_alias.choices[1:])  # type: ignore[union-attr]
        for field, info in Settings.model_fields.items()
    }
    assert names["prometheus_port"] == list(autoinstrument._PORT_VARIABLES)
    assert names["metrics_exporter"] == list(autoinstrument._EXPORTER_VARIABLES)
