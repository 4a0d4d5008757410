"""The bootstrap `sitecustomize` that `otel-kit run` puts first on PYTHONPATH, in real
interpreters: the `sitecustomize` it shadows runs exactly once in every one of them, and an
interpreter that cannot load otel-kit runs as if it were not there, without a word."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otel_kit.autoinstrument import PYTHONPATH

pytestmark = pytest.mark.integration

# Interpreters other than the one running the tests: the system's, and pyenv's if present.
OTHER_PYTHONS = [
    python
    for python in [
        "/usr/bin/python3",
        "/usr/bin/python2",
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/*/bin/python"))),
    ]
    if os.path.exists(python)
]
# Printed by the child: how many otel-kit bootstraps (import hooks) it installed.
HOOKS = "import sys; print(sum(type(f).__name__ == 'PostImportHook' for f in sys.meta_path))"


def own_site(tmp_path: Path) -> Path:
    """A directory with a `sitecustomize` of its own (the application's, a distribution's) that
    appends a line to $MARKER each time it runs."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os\nwith open(os.environ['MARKER'], 'a') as f:\n    f.write('ran\\n')\n"
    )
    return site


def broken_otel_kit(tmp_path: Path, body: str) -> Path:
    """A directory whose `otel_kit` package fails on import with `body`."""
    broken = tmp_path / "broken"
    (broken / "otel_kit").mkdir(parents=True)
    (broken / "otel_kit" / "__init__.py").write_text(body)
    return broken


def run(
    python: str, path: list[Path], tmp_path: Path, *, own_pid: bool = False
) -> subprocess.CompletedProcess[str]:
    """`python -c HOOKS` with PYTHONPATH=`path`; with `own_pid`, as the command `otel-kit run`
    started (OTEL_KIT_RUN_PID is its own PID)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OTEL_KIT_RUN_PID")}
    env["PYTHONPATH"] = os.pathsep.join(map(str, path))
    env["MARKER"] = str(tmp_path / "marker")
    command = [python, "-c", HOOKS]
    if own_pid:  # the shell execs python: the same PID
        command = ["sh", "-c", 'OTEL_KIT_RUN_PID=$$ exec "$@"', "sh", *command]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def runs_of_own_site(tmp_path: Path) -> int:
    marker = tmp_path / "marker"
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_with_otel_kit_the_shadowed_sitecustomize_runs_once(tmp_path: Path) -> None:
    result = run(sys.executable, [PYTHONPATH, own_site(tmp_path)], tmp_path)
    assert (result.stderr, result.stdout) == ("", "1\n")
    assert runs_of_own_site(tmp_path) == 1


@pytest.mark.parametrize(
    "failure",
    ["raise ImportError('needs another Python')", "def broken(:\n", "raise RuntimeError('no')"],
    ids=["ImportError", "SyntaxError", "RuntimeError"],
)
def test_where_otel_kit_cannot_load_it_is_silent(tmp_path: Path, failure: str) -> None:
    path = [PYTHONPATH, broken_otel_kit(tmp_path, failure), own_site(tmp_path)]
    result = run(sys.executable, path, tmp_path)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "0\n")
    assert runs_of_own_site(tmp_path) == 1


def test_the_command_otel_kit_run_started_says_why(tmp_path: Path) -> None:
    """The one interpreter otel-kit was asked to set up tells why it did not."""
    path = [PYTHONPATH, broken_otel_kit(tmp_path, "raise ImportError('old')"), own_site(tmp_path)]
    result = run(sys.executable, path, tmp_path, own_pid=True)
    assert result.stdout == "0\n"
    assert result.stderr.startswith("otel-kit: not instrumenting ")
    assert "old" in result.stderr and len(result.stderr.splitlines()) == 1
    assert runs_of_own_site(tmp_path) == 1


@pytest.mark.parametrize("python", OTHER_PYTHONS or [pytest.param("", marks=pytest.mark.skip)])
def test_another_python_without_otel_kit_is_untouched(tmp_path: Path, python: str) -> None:
    """Another Python (the system's, an old one, a Python 2) on the same PYTHONPATH: no
    output, and its own sitecustomize runs once."""
    probe = subprocess.run([python, "-c", "import otel_kit"], cwd=tmp_path, capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{python} has otel-kit installed")
    result = run(python, [PYTHONPATH, own_site(tmp_path)], tmp_path)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "0\n")
    assert runs_of_own_site(tmp_path) == 1


def test_two_bootstraps_on_the_path_set_up_once(tmp_path: Path) -> None:
    """otel-kit's directory twice, and a second copy of it (`otel-kit run` of another install
    inside this one): the application's sitecustomize and otel-kit's bootstrap each run once."""
    copy = tmp_path / "other-install" / "otel_kit" / "autoinstrument" / "pythonpath"
    shutil.copytree(PYTHONPATH, copy)
    site = own_site(tmp_path)
    result = run(sys.executable, [PYTHONPATH, copy, PYTHONPATH, site], tmp_path)
    assert (result.stderr, result.stdout) == ("", "1\n")
    assert runs_of_own_site(tmp_path) == 1


def test_a_failing_shadowed_sitecustomize_is_reported_as_python_would(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("raise ValueError('bad site')\n")
    plain = subprocess.run(
        [sys.executable, "-c", "pass"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    result = run(sys.executable, [PYTHONPATH, site], tmp_path)
    assert result.stderr == plain.stderr
    assert "ValueError: bad site" in result.stderr
    assert result.stdout == "1\n"  # otel-kit is set up all the same
