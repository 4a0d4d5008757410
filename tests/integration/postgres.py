"""A real PostgreSQL server on loopback: the session's `postgres_dsn` fixture
(tests/integration/conftest.py) is one.

The server runs from the machine's packages (`apt-get install postgresql`) in a temporary
directory, listens on 127.0.0.1 only, trusts local connections and is stopped by its PID at the
end of the block.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.processes import free_port

DATABASE = "otel_kit"
_INSTALL = "apt-get install postgresql"


def _binaries() -> dict[str, str]:
    """initdb and postgres, from PATH or the newest /usr/lib/postgresql/<version>/bin."""
    found: dict[str, str] = {}
    versioned = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    for name in ("initdb", "postgres"):
        path = shutil.which(name) or next(
            (f"{d}/{name}" for d in versioned if os.access(f"{d}/{name}", os.X_OK)), None
        )
        if path is None:
            pytest.fail(
                f"PostgreSQL's {name} binary not found on PATH or in "
                f"/usr/lib/postgresql/*/bin; install it with: {_INSTALL}"
            )
        found[name] = path
    return found


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(
            f"running as root and there is no 'postgres' user to run the server; {_INSTALL}"
        )
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT) by PID; SIGKILL the server's process group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait_ready(process: subprocess.Popen[bytes], dsn: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"postgres exited with {process.returncode}:\n{log.read_text()}")
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                _stop(process)
                pytest.fail(f"postgres did not accept connections within 30 s:\n{log.read_text()}")
            time.sleep(0.1)


@contextmanager
def running_postgres() -> Iterator[str]:
    """`postgresql://postgres@127.0.0.1:<port>/otel_kit`, a fresh database on a fresh server
    for the block (stopped by PID)."""
    binaries = _binaries()
    run_as = _run_as()
    # Not pytest's tmp_path: its parent is root-only (0700) and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="otel-kit-postgres-"))
    data, sockets, log = root / "data", root / "sockets", root / "postgres.log"
    try:
        sockets.mkdir()
        log.touch()
        if run_as:
            for path in (root, sockets, log):
                os.chown(path, run_as["user"], run_as["group"])
        initdb = [binaries["initdb"], "-D", str(data), "-U", "postgres", "--auth=trust"]
        init = subprocess.run(
            [*initdb, "--no-sync", "--locale=C", "--encoding=UTF8"],
            capture_output=True,
            timeout=120,
            check=False,
            **run_as,
        )
        if init.returncode != 0:
            pytest.fail(f"initdb failed:\n{init.stdout.decode()}{init.stderr.decode()}")
        port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": str(sockets),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
        }
        args = [binaries["postgres"], "-D", str(data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with log.open("ab") as out:
            process = subprocess.Popen(
                args, stdout=out, stderr=out, start_new_session=True, **run_as
            )
        try:
            admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            _wait_ready(process, admin, log)
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f"CREATE DATABASE {DATABASE}")
            yield f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"
        finally:
            _stop(process)
    finally:
        shutil.rmtree(root, ignore_errors=True)
