"""`otel-kit run` with real servers: every server form, several workers, one consistent view.

Each test copies the apps in tests/integration/apps/ to a temporary directory, starts
`otel-kit run ...` there in its own session (process group), sends real HTTP requests on
127.0.0.1 over fresh connections (so they spread over the workers), scrapes, and stops the whole
process group by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.exposition import series, value
from tests.integration.otel_kit_run import (
    FORMS,
    RUN_CLI,
    VENV_BIN,
    gunicorn,
    otel_kit_run,
    uvicorn,
)
from tests.integration.processes import free_port

pytestmark = pytest.mark.integration

COUNT = "http_server_request_duration_seconds_count"
ITEMS = {"http_route": "/items/{item_id}"}
N = 200


def live_workers(expected: int) -> Callable[[str], bool]:
    return lambda text: value(text, "app_workers") == expected


@pytest.mark.parametrize("form", FORMS)
def test_every_request_counted_once_in_one_scrape(tmp_path: Path, form: str) -> None:
    command, workers = FORMS[form]
    port = free_port()
    with otel_kit_run(tmp_path, command(port), port=port) as run:
        run.wait_for(live_workers(workers), f"{workers} live worker(s)")
        run.requests(N)
        for _ in range(5):
            assert run.get("/sub/hello").text == "hello"
        scrapes = [run.scrape() for _ in range(3)]

    assert len(run.pids) == workers, "the requests did not reach every worker"
    for text in scrapes:
        assert value(text, COUNT, **ITEMS) == N
        assert value(text, COUNT) == N + 5  # the mounted Starlette app's requests, once each
        assert value(text, "app_requests_total") == N  # the app's own OTel counter
        assert value(text, "app_workers") == workers
        assert value(text, "http_server_active_requests") == 0
        assert value(text, "process_cpu_time_seconds_total") > 0
        assert len(series(text, "target_info")) == 1
    assert scrapes[0].count("\ntarget_info") == 1
    # Identical but for the runtime metrics, which move between scrapes.
    stable = [
        [line for line in text.splitlines() if not line.startswith(("process_", "cpython_"))]
        for text in scrapes
    ]
    assert stable[0] == stable[1] == stable[2]
    # gunicorn --preload imports the app once, in the arbiter; the forked workers inherit its
    # count and must not report it again.
    imports = 5 if "preload" in form or workers == 1 else 5 * workers
    assert value(scrapes[0], "app_imports_total") == imports


def test_scrapes_during_traffic(tmp_path: Path) -> None:
    """Scrapes racing requests and each other: totals only grow, no worker waits for another
    (concurrent scrapes in different workers ask each other for snapshots), the end is exact."""
    port = free_port()
    with otel_kit_run(tmp_path, uvicorn(port, "--workers", "2"), port=port) as run:
        run.wait_for(live_workers(2), "2 live workers")
        with ThreadPoolExecutor(1) as traffic:
            done = traffic.submit(run.requests, 400, 0, 4)
            rounds = 0
            seen = 0.0  # the largest total any finished scrape showed
            while not done.done():
                with ThreadPoolExecutor(4) as scrapers:
                    texts = list(scrapers.map(lambda _: run.scrape(), range(4)))
                totals = [value(text, COUNT, **ITEMS) for text in texts]
                assert min(totals) >= seen, "a total went down"
                seen = max(totals)
                rounds += 1
            done.result()
        assert rounds > 3
        assert value(run.scrape(), COUNT, **ITEMS) == 400
    assert len(run.pids) == 2
    assert "did not answer" not in run.output()


def test_recycled_workers_keep_their_counts(tmp_path: Path) -> None:
    """gunicorn --max-requests: workers die and are replaced every 20 requests."""
    port = free_port()
    data = tmp_path / "mp"
    command = gunicorn(port, "-w", "2", "--max-requests", "20", "--max-requests-jitter", "0")
    options = ["--multiproc-dir", str(data)]
    with otel_kit_run(tmp_path, command, options=options, port=port) as run:
        run.wait_for(live_workers(2), "2 live workers")
        totals = []
        answered = 0
        for batch in range(8):
            answered += run.requests_to_recycling_workers(25, start=batch * 25)
            text = run.scrape()
            totals.append(value(text, COUNT, **ITEMS))
            assert totals == sorted(totals), "a total went down"
            assert totals[-1] == answered
        # Scrapes count nothing themselves, so by now every worker was recycled several times.
        assert answered >= 190 and len(run.pids) > 4
        text = run.wait_for(live_workers(2), "dead workers' gauges gone")
        assert value(text, COUNT, **ITEMS) == answered
        assert value(text, "app_requests_total") == answered
        boots = run.output().count("Booting worker with pid")
        assert value(text, "app_imports_total") == 5 * boots  # each worker imports the app
        # Dead workers were folded into the archive: two live workers and the arbiter remain.
        snapshots = sorted(p.name for p in data.glob("*.json"))
        assert len(snapshots) <= 4, snapshots
        # Runtime metrics per worker number: one memory series per live process, and the
        # counters of every recycled worker under the numbers their successors took over (a
        # new one may start before the last has left: one number more at most).
        memory = [s["worker"] for s in series(text, "process_memory_usage_bytes")]
        assert len(memory) == len(set(memory)) == 3, memory
        cpu = {s["worker"] for s in series(text, "process_cpu_time_seconds_total")}
        assert set(memory) <= cpu <= {"0", "1", "2", "3"}, cpu
        assert value(text, "process_cpu_time_seconds_total", worker=memory[0]) > 0

    assert not data.exists() or not list(data.glob("*.sock")), "sockets left behind"


def test_killed_worker_keeps_what_it_reported(tmp_path: Path) -> None:
    """SIGKILL: no final snapshot, but the one written for the last scrape stays counted,
    and the killed worker's gauge goes."""
    port = free_port()
    with otel_kit_run(tmp_path, gunicorn(port, "-w", "2"), port=port) as run:
        run.wait_for(live_workers(2), "2 live workers")
        run.requests(N)
        assert value(run.scrape(), COUNT, **ITEMS) == N
        os.kill(min(run.pids), signal.SIGKILL)
        text = run.wait_for(
            lambda text: value(text, "app_workers") == 1, "the killed worker's gauge gone"
        )
        assert value(text, COUNT, **ITEMS) == N
        text = run.wait_for(live_workers(2), "a new worker replacing the killed one")
        run.requests(10)
        assert value(run.scrape(), COUNT, **ITEMS) == N + 10


def test_reload_keeps_counting(tmp_path: Path) -> None:
    port = free_port()
    command = uvicorn(port, "--reload", "--reload-dir", ".")
    with otel_kit_run(tmp_path, command, port=port) as run:
        run.wait_for(live_workers(1), "the worker")
        run.requests(50)
        answered = 50
        first = set(run.pids)
        source = run.cwd / "plain.py"
        source.write_text(source.read_text() + "\n# changed\n")
        # Until the new worker answers: a request the old one dropped while leaving (reset,
        # refused) never reached the app and is not counted.
        deadline = time.monotonic() + 30
        while run.pids <= first:
            if time.monotonic() > deadline:
                pytest.fail(f"no reload within 30 s:\n{run.output()}")
            time.sleep(0.2)
            answered += run.requests_to_recycling_workers(1, start=1000)
        text = run.wait_for(live_workers(1), "only the new worker's gauge")
        # The old worker's requests survive it.
        assert value(text, COUNT, **ITEMS) == value(text, "app_requests_total") == answered
        run.requests(50, start=2000)
        assert value(run.scrape(), COUNT, **ITEMS) == answered + 50


@pytest.mark.parametrize("form", ["uvicorn", "gunicorn -w 2"])
def test_app_calling_setup_metrics_counts_once(tmp_path: Path, form: str) -> None:
    port = free_port()
    command = (
        uvicorn(port, app="selfsetup:app")
        if form == "uvicorn"
        else gunicorn(port, "-w", "2", app="selfsetup:app")
    )
    with otel_kit_run(tmp_path, command, port=port) as run:
        run.requests(N)
        text = run.scrape()
    assert value(text, COUNT, **ITEMS) == N
    assert value(text, COUNT) == N


def test_metrics_port_served_by_the_first_process_only(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    options = ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port)]
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    command = gunicorn(port, "-w", "2")
    with otel_kit_run(tmp_path, command, options=options, port=port, ready="/items/0") as run:
        run.requests(N)
        text = run.scrape(url)
        assert run.get("/metrics").status_code == 404  # not on the app when a port is set
        assert run.process.poll() is None
    assert value(text, COUNT, **ITEMS) == N + 1
    assert "EADDRINUSE" not in run.output() and "Address already in use" not in run.output()


def test_missing_optional_libraries(tmp_path: Path) -> None:
    """The app starts and is measured though redis, SQLAlchemy, httpx and psutil cannot be
    imported, nor any OpenTelemetry contrib package (each shadowed by a package raising
    ImportError, as when not installed): otel-kit run needs nothing but otel-kit."""
    shadow = tmp_path / "shadow"
    for library in (
        "redis",
        "sqlalchemy",
        "httpx",
        "psutil",
        "opentelemetry/instrumentation",  # a portion of the `opentelemetry` namespace package
        "opentelemetry/exporter",
    ):
        name = library.replace("/", ".")
        (shadow / library).mkdir(parents=True)
        (shadow / library / "__init__.py").write_text(
            f"raise ModuleNotFoundError({f'No module named {name!r}'!r}, name={name!r})\n"
        )
    port = free_port()
    # Shadowed for the application only (a shell adds them to otel-kit run's PYTHONPATH and
    # execs uvicorn): the otel-kit command itself needs httpx.
    script = f'PYTHONPATH="$PYTHONPATH:{shadow}" exec {" ".join(uvicorn(port))}'
    with otel_kit_run(tmp_path, ["sh", "-c", script], port=port) as run:
        run.requests(20)
        text = run.scrape()
        probe = subprocess.run(
            ["sh", "-c", f'PYTHONPATH="{shadow}" python -c "import opentelemetry.exporter"'],
            capture_output=True,
            text=True,
            env={**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ["PATH"]},
        )
    assert "No module named 'opentelemetry.exporter'" in probe.stderr  # the shadow works
    assert value(text, COUNT, **ITEMS) == 20
    assert series(text, "process_cpu_time_seconds_total") == []  # runtime needs psutil
    assert "Traceback" not in run.output()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = VENV_BIN + os.pathsep + os.environ["PATH"]
    environment = {**os.environ, "PATH": path, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, str(RUN_CLI), "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--cardinality-limit", "-5", "python", "-c", "pass"],
            {},
            "invalid setting cardinality_limit / OTEL_KIT_CARDINALITY_LIMIT = '-5': expected an "
            "integer from 1 to 10000000",
        ),
        (
            ["--metrics-exporter", "prometheus,bogus", "python", "-c", "pass"],
            {},
            "allowed: comma-separated prometheus, otlp, console, none (from --metrics-exporter)",
        ),
        (
            ["python", "-c", "pass"],
            {"OTEL_EXPORTER_PROMETHEUS_PORT": "70000"},
            "OTEL_EXPORTER_PROMETHEUS_PORT = '70000': expected a TCP port",
        ),
        (["--no-such-option", "x", "python"], {}, "No such option: --no-such-option"),
        ([], {}, "missing the command to run"),
        (["--multiproc-dir", "/tmp/" + "d" * 80, "python"], {}, "at most 76 characters"),
    ],
)
def test_bad_option_exits_2(args: list[str], env: dict[str, str], message: str) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_directory_in_use_exits_2(tmp_path: Path) -> None:
    """Two services sharing one directory would add up each other's metrics."""
    directory = tmp_path / "mp"
    directory.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as live:
        live.bind(str(directory / "0123456789ab.sock"))
        result = run_cli("--multiproc-dir", str(directory), "python", "-c", "pass")
    assert result.returncode == 2
    assert "1 running process(es) use it" in result.stderr


def test_unknown_command_exits_127() -> None:
    result = run_cli("no-such-command-otel-kit")
    assert result.returncode == 127
    assert "cannot run 'no-such-command-otel-kit'" in result.stderr


def test_help_lists_options_with_their_env_vars() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag, env in [
        ("--service-name", "OTEL_SERVICE_NAME"),
        ("--metrics-exporter", "OTEL_METRICS_EXPORTER"),
        ("--prometheus-port", "OTEL_EXPORTER_PROMETHEUS_PORT"),
        ("--multiproc-dir", "OTEL_KIT_MULTIPROC_DIR"),
    ]:
        line = next(line for line in result.stdout.splitlines() if f"│ {flag} " in line)
        assert env in line


def test_options_reach_the_command_and_the_directory_is_removed(tmp_path: Path) -> None:
    """Options become env vars of the command (a flag wins over the same setting's env var);
    its arguments after the command stay its own; otel-kit is set up before the command's code
    runs, after the command's own sitecustomize; the data directory otel-kit run created is
    gone once the command ends."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['OWN_SITECUSTOMIZE'] = 'ran'\n")
    script = (
        "import json, os, sys; import otel_kit._setup as s; ready = s._current is not None;"
        "h = s.setup_metrics(); print(json.dumps({'argv': sys.argv[1:], 'ready': ready,"
        "'service': h.settings.service_name, 'dir': h.settings.multiproc_dir,"
        "'pythonpath': os.environ['PYTHONPATH'], 'own': os.environ.get('OWN_SITECUSTOMIZE')}))"
    )
    result = run_cli(
        "--service-name",
        "from-flag",
        "--prometheus-port",
        "0",
        "python",
        "-c",
        script,
        "--service-name",
        "arg",
        env={"OTEL_SERVICE_NAME": "from-env", "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["argv"] == ["--service-name", "arg"]
    assert seen["ready"] is True
    assert seen["service"] == "from-flag"
    assert seen["own"] == "ran"
    assert seen["pythonpath"].split(os.pathsep)[1:] == [str(site)]
    assert (
        seen["pythonpath"]
        .split(os.pathsep)[0]
        .endswith(os.path.join("otel_kit", "autoinstrument", "pythonpath"))
    )
    assert seen["dir"] and not os.path.exists(seen["dir"])
