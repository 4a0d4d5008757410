"""Scrape cost with several worker processes (`otel-kit run gunicorn -w N`) vs one process.

    .venv/bin/python bench/multiworker.py [--rounds 5] [--scrapes 200] [--otel-kit DIR]
                                          [--out bench/results]

The app (bench/apps/routes20.py) gets 400 requests over 20 routes (40 histogram series), then
/metrics is scraped `--scrapes` times: client latency, CPU of all the server's processes per
scrape, and bytes. Setups are interleaved: each round runs every one (in a rotated order), and
the ratio to the single process is taken per round (a pair: same round, same machine state),
then reported as the median and IQR over rounds. The servers import the otel_kit package
copied when the benchmark starts (or `--otel-kit DIR`); `--before DIR` (another otel_kit
package, e.g. `git archive <commit> otel_kit`) adds its `gunicorn -w N` setups to every round.
Writes multiworker.json/.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from http_overhead import free_port  # bench/ is the script's directory

BENCH = Path(__file__).resolve().parent
APPS = BENCH / "apps"
OTEL_KIT = str(Path(sys.executable).with_name("otel-kit"))
WORKERS = (1, 2, 4, 8)


def group_cpu(pgid: int) -> float:
    """CPU seconds used so far by every process of the process group."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


def measure(
    name: str, command: list[str], env: dict[str, str], workers: int, scrapes: int, package: Path
) -> dict[str, Any]:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environment.update(env)
    environment["PYTHONPATH"] = f"{package.parent}:{APPS}"  # that otel_kit, not the work tree's
    # gunicorn and uvicorn from this venv, whatever the caller's PATH
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment.get('PATH', '')}"
    argv = [part.replace("PORT", str(port)) for part in command]
    process = subprocess.Popen(
        argv,
        env=environment,
        cwd=APPS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise SystemExit(f"{name}: the server exited with {process.returncode}")
            try:
                get(base + "/metrics")
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"{name}: the server did not answer within 30 s")
        time.sleep(2 + workers)  # every worker up
        for i in range(400):
            with contextlib.suppress(urllib.error.HTTPError):
                get(f"{base}/r{i % 20}/{i}")
        body = get(base + "/metrics")
        latencies = []
        cpu_before = group_cpu(process.pid)
        for _ in range(scrapes):
            start = time.perf_counter()
            get(base + "/metrics")
            latencies.append(time.perf_counter() - start)
        cpu = (group_cpu(process.pid) - cpu_before) / scrapes
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith("http_server_request_duration_seconds_count")
    )
    if counted < 400:
        raise SystemExit(f"{name}: counted {counted} of 400 requests: not a valid run")
    return {
        "setup": name,
        "workers": workers,
        "p50_ms": statistics.median(latencies) * 1e3,
        "cpu_ms_per_scrape": cpu * 1e3,
        "bytes": len(body),
    }


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def copy_package(source: Path, into: Path) -> Path:
    """`source` (an otel_kit package directory) copied into `into`: what every round runs."""
    shutil.copytree(source, into / "otel_kit", ignore=shutil.ignore_patterns("__pycache__"))
    return into / "otel_kit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--otel-kit", type=Path, default=BENCH.parent / "otel_kit")
    parser.add_argument("--before", type=Path)
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    uvicorn = [sys.executable, "-m", "uvicorn", "--port", "PORT", "--no-access-log"]
    gunicorn = ["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-b", "127.0.0.1:PORT"]
    single = "single process, setup_metrics(app)"
    setups: list[tuple[str, list[str], dict[str, str], int, str]] = [
        (single, [*uvicorn, "routes20:app"], {"SETUP": "1"}, 1, "otel_kit"),
        ("otel-kit run uvicorn", [OTEL_KIT, "run", *uvicorn, "routes20:app"], {}, 1, "otel_kit"),
    ]
    setups += [
        (
            f"otel-kit run gunicorn -w {n}{label}",
            [OTEL_KIT, "run", *gunicorn, "-w", str(n), "routes20:app"],
            {},
            n,
            package,
        )
        for label, package in [("", "otel_kit"), (" (before)", "before")][: 1 + bool(args.before)]
        for n in WORKERS
    ]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="otel-kit-bench-") as workdir:
        packages = {"otel_kit": copy_package(args.otel_kit.resolve(), Path(workdir, "now"))}
        if args.before:
            packages["before"] = copy_package(args.before.resolve(), Path(workdir, "before"))
        for round_ in range(args.rounds):
            shift = round_ % len(setups)  # rotated: no setup always runs first or last
            for name, command, env, workers, package in setups[shift:] + setups[:shift]:
                run = measure(name, command, env, workers, args.scrapes, packages[package])
                run["round"] = round_
                runs.append(run)
                print(json.dumps(run), flush=True)
    report(runs, [name for name, *_ in setups], args.rounds, args.scrapes, args.out)


def report(
    runs: list[dict[str, Any]], names: list[str], rounds: int, scrapes: int, out: Path
) -> None:
    """multiworker.json/.md from the runs: per setup, the medians over rounds (flat, as
    bench/readme.py reads them) and their interquartile ranges (`iqr`)."""
    base = {r["round"]: r for r in runs if r["setup"] == names[0]}  # the single process
    rows = []
    for name in names:
        mine = [r for r in runs if r["setup"] == name]
        columns = {
            "p50_ms": [r["p50_ms"] for r in mine],
            "p50_x_single": [r["p50_ms"] / base[r["round"]]["p50_ms"] for r in mine],
            "cpu_ms_per_scrape": [r["cpu_ms_per_scrape"] for r in mine],
            "cpu_x_single": [
                r["cpu_ms_per_scrape"] / base[r["round"]]["cpu_ms_per_scrape"] for r in mine
            ],
        }
        spread = {key: quartiles(values) for key, values in columns.items()}
        row: dict[str, Any] = {"setup": name}
        row |= {key: round(q[1], 2) for key, q in spread.items()}
        row["bytes"] = mine[-1]["bytes"]
        row["iqr"] = {key: [round(q[0], 2), round(q[2], 2)] for key, q in spread.items()}
        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    document = {"rounds": rounds, "scrapes": scrapes, "rows": rows, "runs": runs}
    (out / "multiworker.json").write_text(json.dumps(document, indent=2) + "\n")

    def cell(row: dict[str, Any], key: str, unit: str = "") -> str:
        low, high = row["iqr"][key]
        return f"{row[key]:.2f}{unit} ({low:.2f}-{high:.2f})"

    lines = [
        "| setup | scrape p50 | x single | CPU per scrape (all processes) | x single | bytes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['setup']} | {cell(r, 'p50_ms', ' ms')} | {cell(r, 'p50_x_single')} "
        f"| {cell(r, 'cpu_ms_per_scrape', ' ms')} | {cell(r, 'cpu_x_single')} | {r['bytes']:,} |"
        for r in rows
    ]
    table = "\n".join(lines)
    (out / "multiworker.md").write_text(
        "# Scrape cost with several workers\n\n"
        f"{rounds} interleaved rounds of {scrapes} scrapes per setup; median (IQR) over "
        "rounds; x single: the median (IQR) of the per-round ratios to that round's single "
        "process.\n\n" + table + "\n"
    )
    print(table)


if __name__ == "__main__":
    main()
