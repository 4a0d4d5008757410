"""Run by .ci/lower-bounds in its venv: every requirement pyproject.toml declares for users (the
dependencies and every extra `all` names) must be installed at exactly its lower bound, so the
tests that follow really test the oldest versions otel-kit allows. Fails on a requirement with
no lower bound, one with an upper bound (it would make installing otel-kit move a library the
application already has), and one installed above its bound (something pulled it up). `dev`
is left out: test tools, not what a user installs. Then, as a user who has exactly these
versions: `pip install otel-kit[all]` must want to install nothing but otel-kit. Prints the
versions it checked."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib  # in [dev] before 3.11

ROOT = Path(__file__).resolve().parent.parent
project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
extras: dict[str, list[str]] = project["optional-dependencies"]


def requirements(lines: list[str]) -> list[Requirement]:
    """The requirements in `lines`, with `otel-kit[a,b]` replaced by those extras' own."""
    found = []
    for line in lines:
        requirement = Requirement(line)
        if requirement.name == project["name"]:
            for extra in sorted(requirement.extras):
                found += requirements(extras[extra])
        else:
            found.append(requirement)
    return found


problems: dict[str, str] = {}  # one per requirement (cli and httpx both name httpx)
checked = {}
for requirement in requirements(project["dependencies"] + extras["all"]):
    if requirement.marker is not None and not requirement.marker.evaluate():
        continue
    bounds = [spec for spec in requirement.specifier if spec.operator == ">="]
    if len(bounds) != 1 or len(requirement.specifier) != 1:
        problems[str(requirement)] = "want exactly one bound, >="
        continue
    lowest, installed = Version(bounds[0].version), Version(version(requirement.name))
    if installed != lowest:
        problems[str(requirement)] = f"{installed} installed, not its lower bound"
    checked[requirement.name] = installed

pip = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--report", "-"]
report = json.loads(subprocess.run([*pip, f"{ROOT}[all]"], capture_output=True, check=True).stdout)
for item in report["install"]:
    name, wanted = item["metadata"]["name"], item["metadata"]["version"]
    if name != project["name"]:
        problems[name] = f"pip install otel-kit[all] would move it to {wanted}"

print(" ".join(f"{name}=={checked[name]}" for name in sorted(checked)))
if problems:
    sys.exit("lower bounds not tested:\n" + "".join(f"  {r}: {p}\n" for r, p in problems.items()))
