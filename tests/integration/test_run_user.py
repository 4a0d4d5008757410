"""`otel-kit run` and the data directory's users and neighbours: files that are not otel-kit's
survive a run's start and exit, a read-only directory is refused with status 2, and
`gunicorn --user` workers share the directory the run created (issue 20's probe)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from otel_kit._exporters.multiprocess import directory
from otel_kit._exporters.multiprocess.view import SCRAPE_WAIT
from otel_kit.cli import _app, run
from tests.exposition import value
from tests.integration.otel_kit_run import gunicorn, otel_kit_run
from tests.integration.processes import ROOT, free_port
from tests.integration.test_run import COUNT, ITEMS, run_cli
from tests.unit.test_multiprocess_security import as_user, created_user

pytestmark = pytest.mark.integration

# Takes part in the view (the command's own process sets up at once) and leaves by exiting.
SETUP = "import otel_kit._setup as s; s.setup_metrics()"


@pytest.fixture(scope="module")
def user() -> Iterator[pwd.struct_passwd]:
    with created_user() as made:
        yield made


def names(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.iterdir())


def test_files_that_are_not_otel_kits_survive_start_and_exit(tmp_path: Path) -> None:
    given = tmp_path / "mp"
    given.mkdir(mode=0o700)
    (given / "notes.txt").write_text("notes")
    (given / directory.OWNED_MARKER).write_text("the user's own file of that name")
    (given / "0123456789ab.json").write_text("{}")  # an earlier run's leftovers
    (given / "archive.json").write_text("{}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.bind(str(given / "other.sock"))  # another program's live socket
        result = run_cli(
            "--multiproc-dir", str(given), "--prometheus-port", "0", "python", "-c", SETUP
        )
        assert result.returncode == 0, result.stderr
        assert directory.alive(str(given / "other.sock"))
    left = names(given)
    snapshots = [name for name in left if name.endswith(".json")]
    assert len(snapshots) == 1 and snapshots != ["0123456789ab.json"], left  # the run's own
    assert "archive.json" not in left
    assert {"notes.txt", "other.sock", directory.OWNED_MARKER} <= set(left)
    assert (given / "notes.txt").read_text() == "notes"
    assert (given / directory.OWNED_MARKER).read_text() == "the user's own file of that name"


def test_the_created_directory_is_removed_but_not_others_files(tmp_path: Path) -> None:
    script = (
        f"{SETUP}; import os, pathlib; d = pathlib.Path(os.environ['OTEL_KIT_MULTIPROC_DIR']);"
        "(d / 'notes.txt').write_text('mine'); print(d)"
    )
    result = run_cli("--prometheus-port", "0", "python", "-c", script)
    assert result.returncode == 0, result.stderr
    created = Path(result.stdout.splitlines()[-1])
    assert names(created) == ["notes.txt"]  # otel-kit's files and marker are gone
    assert (created / "notes.txt").read_text() == "mine"
    shutil.rmtree(created)


def skip_unless_readable_by(user: pwd.struct_passwd) -> None:
    """Code runs as `user` after the switch (gunicorn's workers, the forked CLI), and Python
    imports lazily: a checkout or virtualenv in a directory only root may enter (mktemp -d
    makes one 0700) cannot be tested this way."""
    for path in (sysconfig.get_paths()["purelib"], str(ROOT / "otel_kit")):
        if as_user(user, lambda path=path: str(os.access(path, os.R_OK | os.X_OK))) != "True":
            pytest.skip(f"the test user cannot read {path}")


def _run_in_process(args: list[str]) -> str:
    """`otel-kit run args...` in this process: (exit code, output) as JSON. The CLI is
    imported before any fork (`_app` and `run` at the top): a child switched to the test
    user may not be able to read the checkout."""
    if not any(command.name == "run" for command in _app.app.registered_commands):
        run.register(_app.app)
    result = CliRunner().invoke(_app.app, ["run", *args])
    return json.dumps([result.exit_code, result.output])


def test_a_read_only_directory_exits_2(request: pytest.FixtureRequest) -> None:
    """Root writes whatever the mode says: the run is then a user of its own."""
    reachable = Path(tempfile.mkdtemp(prefix="otel-kit-test-"))
    try:
        reachable.chmod(0o755)
        read_only = reachable / "ro"
        read_only.mkdir(mode=0o500)
        args = ["--multiproc-dir", str(read_only), "python", "-c", "pass"]
        if os.geteuid() == 0:
            runner: pwd.struct_passwd = request.getfixturevalue("user")
            skip_unless_readable_by(runner)
            os.chown(read_only, runner.pw_uid, runner.pw_gid)
            code, output = json.loads(as_user(runner, lambda: _run_in_process(args)))
            uid = runner.pw_uid
        else:
            code, output = json.loads(_run_in_process(args))
            uid = os.geteuid()
    finally:
        shutil.rmtree(reachable)
    assert code == 2, output
    assert (
        f"otel-kit run: invalid setting multiproc_dir / OTEL_KIT_MULTIPROC_DIR = "
        f"{str(read_only)!r}: not writable by uid {uid} (Permission denied)"
    ) in output.replace("\n", " ")


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return int(line.split()[2])  # the effective uid


def _environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


@pytest.mark.parametrize("served", ["app", "--prometheus-port"])
def test_gunicorn_user_workers_share_the_created_directory(
    tmp_path: Path, user: pwd.struct_passwd, served: str
) -> None:
    """The arbiter sets up as root, its workers then switch to --user/--group: they must
    write, lock and answer in the directory (and answer the arbiter's scrapes when it serves
    the metrics port); every request counts once; the directory is removed at the end."""
    skip_unless_readable_by(user)
    port, metrics_port = free_port(), free_port()
    options = ["--prometheus-port", str(metrics_port)] if served != "app" else []
    metrics = f"http://127.0.0.1:{metrics_port if options else port}/metrics"
    # --preload: the app is imported by the root arbiter. This machine's Python lives under
    # /root (mode 0700), whose standard library a worker switched to the user cannot import.
    command = gunicorn(
        port, "-w", "2", "--preload", "--user", user.pw_name, "--group", user.pw_name
    )
    ready = "/metrics" if served == "app" else "/items/0"
    with otel_kit_run(tmp_path, command, options=options, port=port, ready=ready) as run:
        data = Path(_environ(run.process.pid)["OTEL_KIT_MULTIPROC_DIR"])
        info = data.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (user.pw_uid, user.pw_gid, 0o700)
        deadline = time.monotonic() + 30
        while value(run.scrape(metrics), "app_workers") != 2:
            assert time.monotonic() < deadline, f"not 2 live workers:\n{run.output()}"
            time.sleep(0.2)
        run.requests(40)
        assert len(run.pids) == 2, "the requests did not reach both workers"
        assert {_uid(pid) for pid in run.pids} == {user.pw_uid}
        started = time.monotonic()
        text = run.scrape(metrics)
        assert time.monotonic() - started < SCRAPE_WAIT  # every process answered at once
        assert value(text, COUNT, **ITEMS) == 40 + (served != "app")  # + the ready request
        assert value(text, "app_requests_total") == 40 + (served != "app")
        assert "Traceback" not in run.output()
        assert "did not answer a scrape" not in run.output()
    assert not data.exists()
