"""The multi-process data directory against other local users and against leftovers: whose
directory is accepted, links at otel-kit's file names, file modes, and what cleanup removes
(issue 20's probe)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource

from otel_kit._exporters.multiprocess import Multiprocess, directory, view
from otel_kit._exporters.prometheus import PullReader
from otel_kit._instruments import FastInstruments
from otel_kit.cli import run
from otel_kit.config import ConfigError

SETTING = "multiproc_dir / OTEL_KIT_MULTIPROC_DIR"
SECRET = "s3cret-token-from-a-file-the-service-can-read"


@contextlib.contextmanager
def created_user() -> Iterator[pwd.struct_passwd]:
    """A user of its own for a test (useradd; skips when not root), removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating a user (useradd) takes root")
    name = f"otk{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/bin/false", name],
        check=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture(scope="module")
def system_user() -> Iterator[pwd.struct_passwd]:
    with created_user() as user:
        yield user


def as_user(user: pwd.struct_passwd, function: Callable[[], str]) -> str:
    """function() in a forked child switched to `user` (root ignores file modes); what it
    returned, or the exception it raised as `raised <repr>`."""
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            result = function()
        except BaseException as exc:
            result = f"raised {exc!r}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        output = pipe.read().decode()
    os.waitpid(pid, 0)
    return output


def refused(path: Path | str) -> str:
    with pytest.raises(ConfigError) as caught:
        directory.check_directory(str(path))
    message = str(caught.value)
    assert message.startswith(f"invalid setting {SETTING} = {str(path)!r}: "), message
    return message


def participant(path: Path) -> Multiprocess:
    resource = Resource.create({"service.name": "shop"})
    reader = PullReader(FastInstruments("test"), resource, 2000)
    return Multiprocess(str(path), reader, resource, keep_instance_id=False, cardinality_limit=2000)


# --- whose directory ------------------------------------------------------------------------


def test_a_directory_others_can_write_to_is_refused(tmp_path: Path) -> None:
    for mode in (0o777, 0o770, 0o1777):
        shared = tmp_path / f"shared-{mode:o}"
        shared.mkdir()
        shared.chmod(mode)
        message = refused(shared)
        assert f"owned by uid {os.geteuid()} with mode {mode:04o}" in message
        assert (
            f"expected a directory owned by uid {os.geteuid()} that group and others cannot "
            "write to (e.g. mode 0700)"
        ) in message
    refused("/tmp")  # the shared sticky /tmp itself: anyone can create names in it


def test_a_directory_of_another_user_is_refused(
    tmp_path: Path, system_user: pwd.struct_passwd
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, system_user.pw_uid, system_user.pw_gid)
    message = refused(theirs)
    assert f"owned by uid {system_user.pw_uid} with mode 0700" in message
    assert "expected a directory owned by uid 0" in message


def test_a_link_to_an_accepted_directory_is_resolved(tmp_path: Path) -> None:
    """Resolved once: swapping the link later cannot lead the processes elsewhere."""
    real = tmp_path / "real"
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    (tmp_path / "real").mkdir(mode=0o700)
    assert directory.check_directory(str(tmp_path / "link")) == real


def test_a_new_directory_is_0700(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        made = directory.check_directory(str(tmp_path / "new"))
    finally:
        os.umask(previous)
    assert made.stat().st_mode & 0o777 == 0o700
    assert list(made.iterdir()) == []  # the write probe left nothing


def test_the_length_limit_counts_bytes(tmp_path: Path) -> None:
    """40 two-byte characters: 45 characters under /tmp, 85 bytes, too long for the sockets."""
    path = Path("/tmp") / ("é" * 40)
    try:
        message = refused(path)
        assert "at most 76 characters, counted as encoded bytes (85 here" in message
        assert not path.exists()
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.rmdir()


def _read_only_refusal(path: Path) -> Callable[[], str]:
    def check() -> str:
        try:
            directory.check_directory(str(path))
        except ConfigError as exc:
            return str(exc)
        return "accepted"

    return check


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory every user can reach (pytest's own temporary directories are root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="otel-kit-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_a_read_only_directory_is_refused(reachable: Path, request: pytest.FixtureRequest) -> None:
    read_only = reachable / "ro"
    read_only.mkdir(mode=0o500)
    check = _read_only_refusal(read_only)
    if os.geteuid() == 0:  # root writes whatever the mode says: check as a user of its own
        user = request.getfixturevalue("system_user")
        os.chown(read_only, user.pw_uid, user.pw_gid)
        message, uid = as_user(user, check), user.pw_uid
    else:
        message, uid = check(), os.geteuid()
    assert message.startswith(f"invalid setting {SETTING} = {str(read_only)!r}: "), message
    assert f"not writable by uid {uid} (Permission denied)" in message
    assert list(read_only.iterdir()) == []


# --- links at otel-kit's names ------------------------------------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file the service can read and write, which a link in the directory points to."""
    target = tmp_path / "victim.txt"
    target.write_text(SECRET)
    return target


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return directory.check_directory(str(tmp_path / "mp"))


def test_writes_never_go_through_a_link(data: Path, victim: Path) -> None:
    (data / "archive.json.tmp").symlink_to(victim)  # the fixed temporary name of before
    (data / "0123456789ab.json").symlink_to(victim)
    directory.write_atomic(data / "archive.json", b'{"v": 1}')
    directory.write_atomic(data / "0123456789ab.json", b'{"v": 2}')
    assert victim.read_text() == SECRET
    assert (data / "archive.json").read_bytes() == b'{"v": 1}'
    assert not (data / "0123456789ab.json").is_symlink()  # the link was replaced, not followed
    assert (data / "0123456789ab.json").read_bytes() == b'{"v": 2}'


def test_a_linked_instance_id_is_not_shown(data: Path, victim: Path) -> None:
    (data / "instance.id").symlink_to(victim)
    mp = participant(data)
    try:
        shown = mp.resource.attributes["service.instance.id"]
        assert SECRET not in str(shown)
        assert str(uuid.UUID(str(shown))) == shown
        assert not (data / "instance.id").is_symlink()
        assert (data / "instance.id").read_text() == shown  # the others get the same one
        assert SECRET not in mp.collect().to_json()
    finally:
        mp.close()
    assert victim.read_text() == SECRET


def test_an_instance_id_that_is_not_a_uuid_is_replaced(data: Path) -> None:
    (data / "instance.id").write_text("<script>not an id</script>")
    found = directory.instance_id(data)
    assert str(uuid.UUID(found)) == found
    assert directory.instance_id(data) == found


def test_linked_locks_are_not_opened(data: Path, victim: Path) -> None:
    """A lock through a link would lock (and create) a file of the attacker's choosing."""
    (data / "lock").symlink_to(victim)
    (data / "port.lock").symlink_to(data / "elsewhere.lock")
    with pytest.raises(OSError), directory.directory_lock(data, timeout=0.1):
        pass
    with pytest.raises(OSError):
        directory.claim_port(data)
    assert not (data / "elsewhere.lock").exists()
    with victim.open("rb") as file:  # not locked by the attempt
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert victim.read_text() == SECRET


def test_new_files_are_0600(data: Path) -> None:
    previous = os.umask(0o022)
    try:
        mp = participant(data)
        try:
            mp.write_snapshot()
            assert mp.claim_port()
            with directory.directory_lock(data, timeout=1.0):
                pass
            directory.write_atomic(data / directory.ARCHIVE, b"{}")
            token = mp._token
        finally:
            mp.close()
    finally:
        os.umask(previous)
    for name in (f"{token}.json", "instance.id", "lock", "port.lock", directory.ARCHIVE):
        mode = (data / name).stat().st_mode & 0o777
        assert mode == 0o600, f"{name}: {mode:o}"


# --- what cleanup removes -----------------------------------------------------------------

OWN_FILES = [
    "0123456789ab.json",
    "0123456789ab.json.tmp",
    "0123456789ab.json.0123456789ab.tmp",
    "0123456789ab-abcdef.reply",
    "archive.json",
    "instance.id",
    "lock",
    "port.lock",
]
OTHERS = ["notes.txt", "app.json", "cache.tmp", "lockfile", "ABCDEF012345.json"]


def test_reset_removes_only_otel_kit_files_and_no_live_socket(data: Path) -> None:
    for name in OWN_FILES + OTHERS:
        (data / name).write_text(name)
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead,
    ):
        other.bind(str(data / "other.sock"))  # another program's live socket
        dead.bind(str(data / "fedcba987654.sock"))
        dead.close()  # what a killed otel-kit process leaves
        assert directory.live_processes(data) == []  # other.sock is not an otel-kit process
        directory.reset(data)
        assert sorted(p.name for p in data.iterdir()) == sorted([*OTHERS, "other.sock"])
        assert all((data / name).read_text() == name for name in OTHERS)


def test_scrapes_leave_other_programs_files_alone(data: Path) -> None:
    """Only `<token>.json` and `<token>.sock` take part: another program's JSON file is not
    read (nor set aside as unreadable), its sockets get no datagram and are not removed."""
    (data / "app.json").write_text('{"not": "a snapshot"}')
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as peer,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead,
    ):
        peer.bind(str(data / "peer.sock"))
        dead.bind(str(data / "other.sock"))
        dead.close()  # refused, like a dead process's: it must not be taken for one
        first, second = participant(data), participant(data)
        try:
            started = time.monotonic()
            first.collect()
            assert time.monotonic() - started < view.SCRAPE_WAIT  # peer.sock was not waited for
        finally:
            first.close()
            second.close()
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(64)
    assert (data / "app.json").read_text() == '{"not": "a snapshot"}'
    assert {"app.json", "peer.sock", "other.sock"} <= set(names(data)), names(data)


def names(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.iterdir())


def test_removal_at_exit_only_for_the_run_that_created_it(data: Path) -> None:
    (data / directory.OWNED_MARKER).write_text("the id of another run")
    for name in [*OWN_FILES, "notes.txt"]:
        (data / name).write_text(name)
    directory.remove_created(data, "this-run")
    assert len(list(data.iterdir())) == len(OWN_FILES) + 2  # nothing removed

    (data / directory.OWNED_MARKER).write_text("this-run")
    directory.remove_created(data, "this-run")
    assert [p.name for p in data.iterdir()] == ["notes.txt"]  # someone else's file stays

    (data / "notes.txt").unlink()
    (data / directory.OWNED_MARKER).write_text("this-run")
    (data / "lock").write_text("")
    directory.remove_created(data, "this-run")
    assert not data.exists()


def test_a_marker_file_in_a_given_directory_does_not_empty_it_at_exit(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process `otel-kit run` started, in a directory it did not create (no run id)."""
    (data / directory.OWNED_MARKER).write_text("")
    (data / "notes.txt").write_text("kept")
    monkeypatch.setenv("OTEL_KIT_RUN_PID", str(os.getpid()))
    monkeypatch.delenv("OTEL_KIT_RUN_ID", raising=False)
    mp = participant(data)
    mp.exit()
    assert (data / "notes.txt").read_text() == "kept"
    assert (data / directory.OWNED_MARKER).exists()


# --- gunicorn --user ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "value"),
    [
        (["-u", "www", "app:app"], "www"),
        (["-uwww", "app:app"], "www"),
        (["--user", "www", "app:app"], "www"),
        (["--user=www", "app:app"], "www"),
        (["--user=a", "-w", "2", "--user", "b"], "b"),  # the last one wins, as in gunicorn
        (["-w", "2", "app:app"], None),
        (["app:app", "--", "--user", "www"], None),
    ],
)
def test_gunicorn_user_option_forms(args: list[str], value: str | None) -> None:
    assert run._last_option(args, "-u", "--user") == value


def test_gunicorn_user_and_group_are_resolved(system_user: pwd.struct_passwd) -> None:
    name, uid, gid = system_user.pw_name, system_user.pw_uid, system_user.pw_gid
    assert run._gunicorn_user(["gunicorn", "--user", name, "--group", name, "a:b"]) == (uid, gid)
    assert run._gunicorn_user(["/venv/bin/gunicorn", f"-u{uid}", "a:b"]) == (uid, os.getegid())
    assert run._gunicorn_user(["uvicorn", "--user", name, "a:b"]) is None
    assert run._gunicorn_user(["gunicorn", "--user", "root", "a:b"]) is None
    assert run._gunicorn_user(["gunicorn", "a:b"]) is None


def test_root_hands_what_it_creates_to_the_run_user(
    tmp_path: Path, system_user: pwd.struct_passwd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gunicorn arbiter (root) sets up before its workers switch to the user: they must
    be able to read, lock and write everything it created."""
    uid, gid = system_user.pw_uid, system_user.pw_gid
    data = tmp_path / "mp"
    data.mkdir(mode=0o700)
    os.chown(data, uid, gid)
    assert f"owned by uid {uid}" in refused(data)  # not without the run saying so
    monkeypatch.setenv(directory.RUN_UID, str(uid))
    mp = participant(data)
    try:
        mp.write_snapshot()
        assert mp.claim_port()
        with directory.directory_lock(data, timeout=1.0):
            pass
        names = [f"{mp._token}.json", f"{mp._token}.sock", "instance.id", "lock", "port.lock"]
        for name in names:
            info = os.lstat(data / name)
            assert (info.st_uid, info.st_gid) == (uid, gid), name
    finally:
        mp.close()
