"""HTTP overhead of metrics libraries on trivial Flask and Django apps (WSGI), measured with wrk.

    .venv/bin/python bench/wsgi_overhead.py            # full run, a few minutes
    .venv/bin/python bench/wsgi_overhead.py --quick    # ~1 minute smoke run

Each variant (bench/apps/wsgi_*.py) runs in one gunicorn sync worker pinned to CPU 0; wrk runs
pinned to CPU 1 (as bench/http_overhead.py, whose wrk and environment helpers this reuses).
Rounds are interleaved (every variant once per round, in a new order each round) and each
instrumented variant is compared with its framework's bare app of the same round: the table
gives the median of those per-pair differences in µs per request and of the per-pair ratios
of throughput. Every instrumented variant must have counted the requests wrk made.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from http_overhead import (  # bench/ is the script's directory
    APPS_DIR,
    BENCH_DIR,
    CONNECTIONS,
    SERVER_CPU,
    BenchError,
    cpu_seconds,
    environment,
    free_port,
    http_get,
    run_wrk,
    snapshot_otel_kit,
)
from prometheus_client.parser import text_string_to_metric_families

PATH = "/items/1"


@dataclass(frozen=True)
class Variant:
    name: str
    module: str
    framework: str
    # The sample counting requests (summed over its label sets); None: a bare app.
    counter: str | None


VARIANTS = (
    Variant("flask bare", "wsgi_flask_bare", "flask", None),
    Variant(
        "flask otel-kit",
        "wsgi_flask_otel_kit",
        "flask",
        "http_server_request_duration_seconds_count",
    ),
    Variant(
        "flask prometheus_flask_exporter", "wsgi_flask_pfe", "flask", "flask_http_request_total"
    ),
    Variant("django bare", "wsgi_django_bare", "django", None),
    Variant(
        "django otel-kit",
        "wsgi_django_otel_kit",
        "django",
        "http_server_request_duration_seconds_count",
    ),
    Variant(
        "django django-prometheus",
        "wsgi_django_prometheus",
        "django",
        "django_http_requests_total_by_view_transport_method_total",
    ),
)


def counted(text: str, sample_name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name
    )


class Gunicorn:
    """`gunicorn -w 1 <module>:app` (a sync worker) on a free loopback port, pinned."""

    def __init__(self, variant: Variant, workdir: Path, *, pin: bool) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{self.port}"]
        cmd += ["--pythonpath", str(workdir / "apps"), "--log-level", "warning"]
        cmd += [f"{variant.module}:app"]
        if pin:
            cmd = ["taskset", "-c", SERVER_CPU, *cmd]
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, cwd=workdir, env=env)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """One request once it answers (the variants count it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"gunicorn exited ({self.proc.returncode}):\n{self.output()}")
            try:
                status, body = http_get(self.base + PATH, timeout=1.0)
            except OSError:
                time.sleep(0.05)
                continue
            if status == 200 and json.loads(body).get("id") == 1:
                return
            raise BenchError(f"GET {PATH} -> {status} {body!r}")
        raise BenchError(f"gunicorn not answering after {timeout}s:\n{self.output()}")

    def worker_pid(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        (pid,) = children.split()
        return int(pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_one(
    variant: Variant, workdir: Path, *, pin: bool, warmup: int, duration: int
) -> dict[str, Any]:
    server = Gunicorn(variant, workdir, pin=pin)
    try:
        server.wait_ready()
        worker = server.worker_pid()
        url = server.base + PATH
        warm = run_wrk(url, warmup, pin=pin, latency=False)
        cpu_before, started = cpu_seconds(worker), time.monotonic()
        measured = run_wrk(url, duration, pin=pin, latency=True)
        cpu_after, wall = cpu_seconds(worker), time.monotonic() - started
        if variant.counter is not None:
            total = 1 + warm.requests + measured.requests
            seen = counted(http_get(server.base + "/metrics")[1].decode(), variant.counter)
            # A sync worker closes each connection after its response; requests wrk had in
            # flight or reconnecting when it stopped were still answered and counted: a few
            # per connection at most, never fewer than wrk completed.
            if not total <= seen <= total + 4 * CONNECTIONS:
                raise BenchError(f"{variant.name} counted {seen:g}, wrk made {total}")
        cpu_us = None
        if cpu_before is not None and cpu_after is not None:
            cpu_us = (cpu_after - cpu_before) * 1e6 / measured.requests
        return {
            "variant": variant.name,
            "rps": measured.rps,
            "us_per_request": 1e6 / measured.rps,
            "p50_us": measured.p50_us,
            "p99_us": measured.p99_us,
            "server_cpu_us": cpu_us,
            "server_cpu_share": None if cpu_us is None else (cpu_after - cpu_before) / wall,
        }
    finally:
        server.stop()


def quartiles(values: list[float]) -> list[float]:
    if len(values) < 2:
        return [values[0]] * 3
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return [q1, q2, q3]


def summarise(rounds: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for variant in VARIANTS:
        runs = [r[variant.name] for r in rounds]
        row: dict[str, Any] = {
            "variant": variant.name,
            "rps_median": statistics.median(r["rps"] for r in runs),
            "p50_us_median": statistics.median(r["p50_us"] for r in runs),
            "p99_us_median": statistics.median(r["p99_us"] for r in runs),
        }
        cpu = [r["server_cpu_us"] for r in runs if r["server_cpu_us"] is not None]
        row["server_cpu_us_median"] = statistics.median(cpu) if cpu else None
        if variant.counter is not None:
            bare = f"{variant.framework} bare"
            pairs = [(r[variant.name], r[bare]) for r in rounds]
            row["added_us_quartiles"] = quartiles(
                [v["us_per_request"] - b["us_per_request"] for v, b in pairs]
            )
            row["rps_ratio_quartiles"] = quartiles([v["rps"] / b["rps"] for v, b in pairs])
            if cpu:
                row["added_cpu_us_quartiles"] = quartiles(
                    [v["server_cpu_us"] - b["server_cpu_us"] for v, b in pairs]
                )
        rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# WSGI overhead: Flask and Django (bench/wsgi_overhead.py)",
        "",
        f"{env['date']}, commit {env['git_commit']}, Python {env['python']}, {env['cpu']} "
        f"({env['cpus']} CPUs), {env['wrk']}; {result['rounds']} interleaved rounds of "
        f"{result['duration_s']} s (after {result['warmup_s']} s warm-up), one gunicorn sync "
        f"worker pinned to CPU {SERVER_CPU}, wrk -c{CONNECTIONS} pinned to the other CPU.",
        "",
        "Per-pair columns: median (IQR) over the rounds of the variant minus its framework's "
        "bare app in the same round; ratio: the variant's throughput over bare's.",
        "",
        "| variant | req/s | p50 µs | p99 µs | added µs/request | added server CPU µs/request "
        "| throughput vs bare |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(q: list[float] | None, fmt: str) -> str:
        return "—" if q is None else f"{q[1]:{fmt}} ({q[0]:{fmt}}..{q[2]:{fmt}})"

    for row in result["rows"]:
        lines.append(
            f"| {row['variant']} | {row['rps_median']:.0f} | {row['p50_us_median']:.0f} "
            f"| {row['p99_us_median']:.0f} | {cell(row.get('added_us_quartiles'), '.1f')} "
            f"| {cell(row.get('added_cpu_us_quartiles'), '.1f')} "
            f"| {cell(row.get('rps_ratio_quartiles'), '.3f')} |"
        )
    packages = ", ".join(f"{k} {v}" for k, v in result["packages"].items())
    return "\n".join([*lines, "", f"Packages: {packages}.", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=int, default=4, help="seconds measured per run")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true", help="no taskset")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args()
    # SIGTERM stops the running server and removes the work directory (the finally blocks)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    rounds, duration = (2, 2) if args.quick else (args.rounds, args.duration)
    pin = not args.no_pin and shutil.which("taskset") is not None
    rng = random.Random(18)
    results: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="otel-kit-wsgi-bench-") as tmp:
        workdir = Path(tmp)
        snapshot_otel_kit(workdir)  # the code as it was at the start, whatever others edit
        shutil.copytree(APPS_DIR, workdir / "apps", ignore=shutil.ignore_patterns("__pycache__"))
        for number in range(rounds):
            order = list(VARIANTS)
            rng.shuffle(order)
            done = {}
            for variant in order:
                done[variant.name] = run_one(
                    variant, workdir, pin=pin, warmup=args.warmup, duration=duration
                )
                print(f"round {number + 1}: {variant.name}: {done[variant.name]['rps']:.0f} req/s")
            results.append(done)
    from importlib import metadata

    names = ("flask", "django", "gunicorn", "prometheus-flask-exporter", "django-prometheus")
    result = {
        "environment": environment(pin),
        "packages": {name: metadata.version(name) for name in (*names, "opentelemetry-sdk")},
        "rounds": rounds,
        "duration_s": duration,
        "warmup_s": args.warmup,
        "rows": summarise(results),
        "runs": results,
    }
    if args.quick:
        print(markdown(result))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wsgi.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "wsgi.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
