"""The package as users install it: the sdist and wheel `python -m build` makes, checked by
twine, with the files they must (and must not) hold, installed into a clean venv where the
README's first example serves metrics and `otel-kit --help` runs."""

from __future__ import annotations

import email
import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import otel_kit
from tests.exposition import value
from tests.integration.processes import ROOT, free_port, server

pytestmark = pytest.mark.integration

COUNT = "http_server_request_duration_seconds_count"


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    yield out


def test_twine_accepts_both(dist: Path) -> None:
    files = sorted(dist.iterdir())
    assert [f.name for f in files] == [
        f"otel_kit-{otel_kit.__version__}-py3-none-any.whl",
        f"otel_kit-{otel_kit.__version__}.tar.gz",
    ]
    assert "PASSED" in run(sys.executable, "-m", "twine", "check", "--strict", *files)


def test_the_wheel_holds_the_package_and_nothing_else(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    info = f"otel_kit-{otel_kit.__version__}.dist-info"
    assert {n.split("/")[0] for n in names} == {"otel_kit", info}
    package = {
        Path(n).relative_to("otel_kit").as_posix() for n in names if n.startswith("otel_kit/")
    }
    source = {p.relative_to(ROOT / "otel_kit").as_posix() for p in (ROOT / "otel_kit").rglob("*")}
    source = {p for p in source if p.endswith((".py", ".typed"))}
    assert package == source  # every module, py.typed and the bootstrap sitecustomize
    assert {"py.typed", "autoinstrument/pythonpath/sitecustomize.py"} <= package
    assert f"{info}/licenses/LICENSE" in names
    metadata = email.message_from_bytes(zipfile.ZipFile(wheel).read(f"{info}/METADATA"))
    assert metadata["Version"] == otel_kit.__version__
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata["License-Expression"] == "Apache-2.0"
    classifiers = metadata.get_all("Classifier") or []
    supported = {c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c)}
    assert supported == {"3.10", "3.11", "3.12", "3.13"}
    assert "Typing :: Typed" in classifiers


def test_what_users_install_has_lower_bounds_only(dist: Path) -> None:
    """Every requirement a user installs (dependencies and extras; not [dev]'s test tools) is
    `name>=version`: no upper bound or pin, so installing otel-kit moves no library the
    application has within the bounds (issue 19: `[all]` took FastAPI 0.109 to 0.165 and
    Starlette to 1.x). .ci/lower-bounds tests each bound; real apps ran the versions below."""
    (wheel,) = dist.glob("*.whl")
    info = f"otel_kit-{otel_kit.__version__}.dist-info"
    metadata = email.message_from_bytes(zipfile.ZipFile(wheel).read(f"{info}/METADATA"))
    extras = set(metadata.get_all("Provides-Extra") or []) - {"dev"}
    bounds: dict[str, SpecifierSet] = {}
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras):
            assert [spec.operator for spec in requirement.specifier] == [">="], line
            bounds[requirement.name] = requirement.specifier
    assert {"pydantic", "pydantic-settings", "typer", "rich", "psutil"} <= bounds.keys()
    for name, version in {"fastapi": "0.109.0", "starlette": "0.35.1", "httpx": "0.26.0"}.items():
        assert version in bounds[name], f"{name} {version} is refused: {bounds[name]}"


def test_the_sdist_holds_sources_tests_and_docs_not_ci(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        top = {Path(m.name).parts[1] for m in archive.getmembers() if len(Path(m.name).parts) > 1}
    assert {"otel_kit", "tests", "bench", "docs", "LICENSE", "README.md", "CHANGELOG.md"} <= top
    assert not top & {".ci", ".venv", "build", "dist"}


def test_the_readme_example_runs_from_the_installed_wheel(dist: Path, tmp_path: Path) -> None:
    """A clean venv, the wheel with the extras a FastAPI user installs, and the README's first
    Python example, verbatim, under uvicorn: it serves its own request counts on /metrics."""
    (wheel,) = dist.glob("*.whl")
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    run(
        python, "-m", "pip", "install", "-q", f"otel-kit[fastapi,cli] @ {wheel.as_uri()}", "uvicorn"
    )
    assert "Commands" in run(env / "bin" / "otel-kit", "--help")
    # Not from this checkout: `python -c` puts the working directory first on sys.path.
    installed = run(python, "-c", "import otel_kit; print(otel_kit.__file__)", cwd=tmp_path)
    assert installed.startswith(str(env))  # the wheel's copy, not this checkout's

    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.S)
    assert example is not None and "setup_metrics(app)" in example.group(1)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(example.group(1))
    port = free_port()
    args = ["-m", "uvicorn", "app:app", "--port", str(port), "--host", "127.0.0.1"]
    with server(args, port, python=str(python), cwd=app_dir) as base:
        for _ in range(3):
            assert httpx.get(f"{base}/nothing-here").status_code == 404
        text = httpx.get(f"{base}/metrics").text
    labels = {"http_request_method": "GET", "http_response_status_code": "404"}
    assert value(text, COUNT, **labels) == 3
