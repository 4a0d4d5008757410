"""Scrape cost with several worker processes (`otel-kit run gunicorn -w N`) vs one process.

    .venv/bin/python bench/multiworker.py [--rounds 3] [--out bench/results]

The app (bench/apps/routes20.py) gets 400 requests over 20 routes (40 histogram series), then
/metrics is scraped 200 times: client latency, CPU of all the server's processes per scrape,
and bytes. Writes multiworker.json/.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from http_overhead import free_port  # bench/ is the script's directory

BENCH = Path(__file__).resolve().parent
APPS = BENCH / "apps"
OTEL_KIT = str(Path(sys.executable).with_name("otel-kit"))
SCRAPES = 200


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


def measure(name: str, command: list[str], env: dict[str, str], workers: int) -> dict[str, Any]:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environment.update(env)
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
        for _ in range(SCRAPES):
            start = time.perf_counter()
            get(base + "/metrics")
            latencies.append(time.perf_counter() - start)
        cpu = (group_cpu(process.pid) - cpu_before) / SCRAPES
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    uvicorn = [sys.executable, "-m", "uvicorn", "--port", "PORT", "--no-access-log"]
    gunicorn = ["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-b", "127.0.0.1:PORT"]
    setups: list[tuple[str, list[str], dict[str, str], int]] = [
        ("single process, setup_metrics(app)", [*uvicorn, "routes20:app"], {"SETUP": "1"}, 1),
        ("otel-kit run uvicorn", [OTEL_KIT, "run", *uvicorn, "routes20:app"], {}, 1),
    ]
    setups += [
        (
            f"otel-kit run gunicorn -w {n}",
            [OTEL_KIT, "run", *gunicorn, "-w", str(n), "routes20:app"],
            {},
            n,
        )
        for n in (1, 2, 4)
    ]
    runs = [measure(*setup) for _ in range(args.rounds) for setup in setups]
    rows = []
    for name, *_ in setups:
        mine = [r for r in runs if r["setup"] == name]
        rows.append(
            {
                "setup": name,
                "p50_ms": round(statistics.median(r["p50_ms"] for r in mine), 2),
                "cpu_ms_per_scrape": round(
                    statistics.median(r["cpu_ms_per_scrape"] for r in mine), 2
                ),
                "bytes": mine[-1]["bytes"],
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multiworker.json").write_text(
        json.dumps({"rows": rows, "runs": runs}, indent=2) + "\n"
    )
    lines = [
        "| setup | scrape p50 | CPU per scrape (all processes) | bytes |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['setup']} | {r['p50_ms']} ms | {r['cpu_ms_per_scrape']} ms | {r['bytes']:,} |"
        for r in rows
    ]
    table = "\n".join(lines)
    (args.out / "multiworker.md").write_text(
        "# Scrape cost with several workers\n\n" + table + "\n"
    )
    print(table)


if __name__ == "__main__":
    main()
