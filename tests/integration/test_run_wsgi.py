"""`otel-kit run` for WSGI servers, real processes on loopback: gunicorn's gthread workers and
recycled sync workers (`--max-requests`) on the Flask app of apps/flask_plain.py, and Django's
`manage.py runserver`, whose autoreloader runs the server in a child process: exact totals in
every scrape; uWSGI with --lazy-apps when it is installed. (Sync workers, --preload and
`flask run`: tests/integration/test_flask.py.)"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.exposition import series, value
from tests.integration.otel_kit_run import VENV_BIN, Run, otel_kit_run
from tests.integration.processes import ROOT, free_port

pytestmark = pytest.mark.integration

COUNT = "http_server_request_duration_seconds_count"
ITEMS = "/items/<int:item_id>"


def gunicorn(port: int, *args: str) -> list[str]:
    return ["gunicorn", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", *args]


def test_gthread_workers(tmp_path: Path) -> None:
    """Two gthread workers of 4 threads each: requests served concurrently in one process."""
    port = free_port()
    command = gunicorn(port, "-w", "2", "-k", "gthread", "--threads", "4", "flask_plain:app")
    with otel_kit_run(tmp_path, command, port=port) as run:
        run.requests(240, concurrency=8)
        for _ in range(3):
            assert run.get("/boom").status_code == 500
        run.wait_for(lambda text: value(text, COUNT) == 243, "243 requests")
        scrapes = [run.scrape() for _ in range(3)]
    assert len(run.pids) == 2, "the requests did not reach both workers"
    for text in scrapes:
        assert value(text, COUNT, http_route=ITEMS, http_response_status_code="200") == 240
        assert value(text, COUNT, http_route="/boom", error_type="ValueError") == 3
        assert value(text, COUNT) == 243
        assert value(text, "http_server_active_requests") == 0


def test_recycled_sync_workers_never_go_backwards(tmp_path: Path) -> None:
    """--max-requests 20: each sync worker is replaced after 20 requests; what the dead ones
    recorded stays in the totals."""
    port = free_port()
    command = gunicorn(
        port, "-w", "2", "--max-requests", "20", "--max-requests-jitter", "0", "flask_plain:app"
    )
    with otel_kit_run(tmp_path, command, port=port) as run:
        totals: list[float] = []
        answered = 0
        for batch in range(6):
            answered += run.requests_to_recycling_workers(25, start=batch * 25)
            text = scrape_until(run, answered)
            totals.append(value(text, COUNT, http_route=ITEMS))
        boots = run.output().count("Booting worker with pid")
    assert totals == sorted(totals), "a total went down"
    assert answered >= 140 and len(run.pids) > 4 and boots > 4
    assert value(text, COUNT) == answered


def scrape_until(run: Run, total: int) -> str:
    """The scrape showing `total` requests to ITEMS. A scrape is a request to gunicorn too, so
    it may reach a worker that is leaving (dropped, as in `requests_to_recycling_workers`)."""
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.TransportError):
            text = httpx.get(run.base + "/metrics", timeout=10).text
            if value(text, COUNT, http_route=ITEMS) == total:
                return text
        if time.monotonic() > deadline:
            pytest.fail(f"{total} requests not seen within 30 s:\n{run.output()}")
        time.sleep(0.2)


def test_django_runserver_with_its_autoreloader(tmp_path: Path) -> None:
    """`python manage.py runserver`: Django's autoreloader re-runs manage.py in a child that
    serves; the metrics are served once, on the app's port, with each request once."""
    port = free_port()
    command = ["python", "manage.py", "runserver", f"127.0.0.1:{port}"]
    env = {
        "PYTHONPATH": str(ROOT),  # the project's package; run's own path goes in front of it
        "DJANGO_SITE_SQLITE": str(tmp_path / "site.sqlite3"),
    }
    with otel_kit_run(tmp_path, command, port=port, env=env) as run:
        for year in range(2000, 2030):
            assert run.get(f"/legacy/{year}/").status_code == 200
        assert run.get("/shop/fail/").status_code == 500
        for i in range(5):
            assert run.get(f"/nowhere/{i}").status_code == 404
        text = run.wait_for(lambda text: value(text, COUNT) == 36, "36 requests")
        again = run.scrape()
        output = run.output()
    legacy = "/legacy/(?P<year>[0-9]{4})/"
    for scrape in (text, again):
        assert value(scrape, COUNT, http_route=legacy, http_response_status_code="200") == 30
        assert value(scrape, COUNT, http_route="/shop/fail/", error_type="RuntimeError") == 1
        assert value(scrape, COUNT, http_response_status_code="404") == 5
        assert value(scrape, COUNT) == 36
        assert len(series(scrape, "target_info")) == 1
    assert "/nowhere" not in text
    assert "Error" not in output.replace("RuntimeError", ""), output
    assert os.sep + "manage.py" not in text


@pytest.mark.parametrize(
    "lazy",
    [
        pytest.param(
            False,
            marks=pytest.mark.xfail(
                strict=True,
                reason="uWSGI forks its workers in C: Python's fork hooks, which give each "
                "worker its own share of the merged view, do not run (not supported yet)",
            ),
        ),
        True,
    ],
)
def test_uwsgi_two_processes(tmp_path: Path, lazy: bool) -> None:
    """uWSGI's master and two workers, the app loaded in each worker (--lazy-apps): each
    request once. (Loaded in the master before it forks, uWSGI's default: not yet.)"""
    if shutil.which("uwsgi", path=VENV_BIN) is None:
        pytest.skip("uWSGI is not installed (pip install uwsgi: it builds from source)")
    port = free_port()
    command = ["uwsgi", "--http-socket", f"127.0.0.1:{port}", "--master", "--processes", "2"]
    command += ["--module", "flask_plain:app", "--disable-logging"]
    command += ["--lazy-apps"] if lazy else []
    with otel_kit_run(tmp_path, command, port=port) as run:
        run.requests(200)
        run.wait_for(lambda text: value(text, COUNT) == 200, "200 requests")
        scrapes = [run.scrape() for _ in range(3)]
    assert len(run.pids) == 2, "the requests did not reach both workers"
    for text in scrapes:
        assert value(text, COUNT, http_route=ITEMS) == 200
        assert value(text, "http_server_active_requests") == 0
