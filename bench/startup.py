"""Start-up cost of `otel-kit run`: wall time and peak memory of short commands, against plain
Python in the same run.

    .venv/bin/python bench/startup.py [--runs 21] [--tree DIR] [--out bench/results]

Each variant is started `--runs` times, all variants interleaved (round after round), so drift of
a busy machine hits them alike; the first round is a warm-up and not counted. Wall time is that of
the whole start to exit (median); peak memory is the command's `ru_maxrss` as GNU time reports it
(median); it spans `exec`, so for `otel-kit run ...` it is the larger of the CLI's
and the command's. "alone" variants start the command with the environment `otel-kit run` gives it
(bootstrap directory on PYTHONPATH, its own PID as OTEL_KIT_RUN_PID, a fresh data directory)
but without the CLI, to show the command's share; "helper" is another Python process of a run
(not the command itself). `--tree DIR` measures the otel_kit package of another checkout (an
earlier commit: `git archive COMMIT | tar -x -C DIR`). Writes startup.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Every variant imports otel_kit from a copy taken at start (first on PYTHONPATH, also for plain
# Python, which then has the same path): edits to otel_kit/ during the run change nothing.
SOURCE = Path(tempfile.gettempdir()) / f"otel-kit-startup-src-{os.getpid()}"
BOOTSTRAP = SOURCE / "otel_kit" / "autoinstrument" / "pythonpath"
BIN = Path(sys.executable).parent
PYTHON = str(BIN / "python")
OTEL_KIT = str(BIN / "otel-kit")
TIME = "/usr/bin/time"  # GNU time
# A web app's imports, no server: the libraries a FastAPI + SQLAlchemy service loads at start.
APP = "import fastapi, sqlalchemy\napp = fastapi.FastAPI()\nsqlalchemy.create_engine('sqlite://')\n"


@dataclass(frozen=True)
class Variant:
    name: str
    baseline: str  # the variant this one is compared with
    command: Callable[[Path], list[str]]  # for a fresh temporary directory
    env: Callable[[Path], dict[str, str]] = lambda _: {}


def run_env(directory: Path, *, own: bool) -> dict[str, str]:
    """What `otel-kit run` sets for its command (see otel_kit/cli/run.py)."""
    (directory / "mp").mkdir(mode=0o700)
    return {
        "PYTHONPATH": os.pathsep.join([str(BOOTSTRAP), str(SOURCE)]),
        "OTEL_KIT_MULTIPROC_DIR": str(directory / "mp"),
        # The command keeps the CLI's PID; "helper" is any other process of the run.
        **({} if own else {"OTEL_KIT_RUN_PID": "1"}),
    }


def own_pid(command: list[str]) -> list[str]:
    """`command` with OTEL_KIT_RUN_PID set to its own PID (the shell execs it), as `otel-kit run`
    does (the CLI sets it again, to the same PID), unless the variant set it already."""
    return ["/bin/sh", "-c", 'OTEL_KIT_RUN_PID=${OTEL_KIT_RUN_PID:-$$} exec "$@"', "sh", *command]


def script(directory: Path) -> str:
    path = directory / "app.py"
    path.write_text(APP)
    return str(path)


VARIANTS = [
    Variant("python -c pass", "python -c pass", lambda d: [PYTHON, "-c", "pass"]),
    Variant(
        "otel-kit run python -c pass",
        "python -c pass",
        lambda d: [OTEL_KIT, "run", PYTHON, "-c", "pass"],
    ),
    Variant(
        "otel-kit run true (the CLI alone)", "python -c pass", lambda d: [OTEL_KIT, "run", "true"]
    ),
    Variant(
        "python -c pass, alone (the run's command)",
        "python -c pass",
        lambda d: [PYTHON, "-c", "pass"],
        lambda d: run_env(d, own=True),
    ),
    Variant(
        "python -c pass, helper (another process of the run)",
        "python -c pass",
        lambda d: [PYTHON, "-c", "pass"],
        lambda d: run_env(d, own=False),
    ),
    Variant("python app.py", "python app.py", lambda d: [PYTHON, script(d)]),
    Variant(
        "otel-kit run python app.py",
        "python app.py",
        lambda d: [OTEL_KIT, "run", PYTHON, script(d)],
    ),
    Variant(
        "python app.py, alone (the run's command)",
        "python app.py",
        lambda d: [PYTHON, script(d)],
        lambda d: run_env(d, own=True),
    ),
]


def measure(variant: Variant, root: Path) -> tuple[float, float]:
    """One start: (wall seconds, peak RSS in MB)."""
    directory = Path(tempfile.mkdtemp(dir=root))
    try:
        base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL")}
        base["PYTHONPATH"] = str(SOURCE)
        # TMPDIR: the data directory of `otel-kit run true` stays (no Python process removes it).
        env = {**base, "TMPDIR": str(directory), **variant.env(directory)}
        rss = directory / "rss"
        # GNU time reports the command's ru_maxrss. Not wait4() here: a child that this (larger)
        # Python forks or vforks counts its pages from before exec too.
        command = [TIME, "-f", "%M", "-o", str(rss), *own_pid(variant.command(directory))]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=directory, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"{variant.name}: exit status {result.returncode}")
        return wall, int(rss.read_text().split()[-1]) / 1024  # KB
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def commit(tree: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True).stdout

    if not (tree / ".git").exists():
        return f"{tree} (not a git checkout)"

    dirty = git("status", "--porcelain", "--", "otel_kit").strip()
    return git("rev-parse", "--short", "HEAD").strip() + ("+dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose otel_kit runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    samples: dict[str, list[tuple[float, float]]] = {v.name: [] for v in VARIANTS}
    shutil.copytree(
        args.tree / "otel_kit", SOURCE / "otel_kit", ignore=shutil.ignore_patterns("*.pyc")
    )
    try:
        with tempfile.TemporaryDirectory(prefix="otel-kit-startup-") as root:
            for round_ in range(args.runs + 1):
                for variant in VARIANTS:
                    sample = measure(variant, Path(root))
                    if round_:  # round 0 warms the page cache and .pyc files
                        samples[variant.name].append(sample)
    finally:
        shutil.rmtree(SOURCE)
    medians = {
        name: (statistics.median(w for w, _ in s) * 1000, statistics.median(m for _, m in s))
        for name, s in samples.items()
    }
    lines = [
        "# Start-up cost of `otel-kit run`",
        "",
        f"`bench/startup.py --runs {args.runs}`, otel_kit at {commit(args.tree)}, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end. Medians of {args.runs} interleaved runs; "
        "memory is peak RSS (`ru_maxrss`).",
        "",
        "| command | wall | vs baseline | peak RSS | vs baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        wall, rss = medians[variant.name]
        base_wall, base_rss = medians[variant.baseline]
        same = variant.name == variant.baseline
        extra_wall = "baseline" if same else f"{wall - base_wall:+.0f} ms"
        extra_rss = "baseline" if same else f"{rss - base_rss:+.1f} MB"
        lines.append(
            f"| {variant.name} | {wall:.0f} ms | {extra_wall} | {rss:.1f} MB | {extra_rss} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.md").write_text(text)


if __name__ == "__main__":
    main()
