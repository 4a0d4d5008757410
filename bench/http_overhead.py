"""HTTP overhead of metrics libraries on a trivial FastAPI app, measured with wrk.

    .venv/bin/python bench/http_overhead.py            # full run, a few minutes
    .venv/bin/python bench/http_overhead.py --quick    # ~1 minute smoke run
    .venv/bin/python bench/http_overhead.py --servers granian,hypercorn --name servers

Each variant (bench/apps/*.py) runs under each server (uvicorn's two flavours by default; gunicorn
with UvicornWorker, hypercorn and granian with --servers), one worker process pinned to CPU 0;
wrk runs pinned to CPU 1. Variants are interleaved (A B C ... A B C ...) for N rounds so that
drift hits all of them equally, and every instrumented variant must show on its /metrics that it
counted the requests wrk made. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

BENCH_DIR = Path(__file__).resolve().parent
APPS_DIR = BENCH_DIR / "apps"
ROUTE = "/items/{item_id}"
PATH = "/items/1"
CONNECTIONS = 16
SERVER_CPU = "0"
CLIENT_CPU = "1"
# The server must get (nearly) all of its pinned core while wrk measures; a lower share means
# another process ran on it, and the run is repeated (up to ATTEMPTS times in all, or --attempts).
MIN_CPU_SHARE = 0.95
ATTEMPTS = 4


@dataclass(frozen=True)
class Variant:
    name: str
    module: str
    description: str
    # The sample that counts requests and the label holding the route template; None: bare.
    counter: tuple[str, str] | None
    baseline: str = "bare"  # the uninstrumented variant it is compared with


@dataclass(frozen=True)
class Flavour:
    """A server running the app in one worker process: `python -m <command>`, where {app} is
    `module:app` (importable: bench/apps is on PYTHONPATH) and {port} the port."""

    name: str
    description: str
    command: str
    needs: tuple[str, ...]  # the modules it imports: without one, it is skipped with a note


VARIANTS = (
    Variant("bare", "bare", "no metrics", None),
    Variant(
        "otel-kit",
        "otel_kit_app",
        "`setup_metrics(app)`",
        ("http_server_request_duration_seconds_count", "http_route"),
    ),
    Variant(
        "pfi",
        "pfi",
        "prometheus-fastapi-instrumentator, `Instrumentator().instrument(app).expose(app)`",
        ("http_requests_total", "handler"),
    ),
    Variant(
        "starlette-exporter",
        "starlette_exporter_app",
        "starlette-exporter, `PrometheusMiddleware` + `handle_metrics`",
        ("starlette_requests_total", "path"),
    ),
    Variant(
        "contrib",
        "contrib",
        "OTel contrib `FastAPIInstrumentor` + SDK + `PrometheusMetricReader`",
        ("http_server_request_duration_seconds_count", "http_route"),
    ),
    Variant(
        "handwritten",
        "handwritten",
        "hand-written pure-ASGI prometheus_client middleware (Histogram + Gauge)",
        ("http_server_request_duration_seconds_count", "http_route"),
    ),
    # The realistic route: one SQLite query through SQLAlchemy and one cache lookup.
    Variant(
        "bare-db",
        "bare_db",
        "realistic route (1 SQLite query + 1 cache lookup), no metrics",
        None,
        "bare-db",
    ),
    Variant(
        "otel-kit-db",
        "otel_kit_db",
        "realistic route with `setup_metrics(app)` and `@cache_metrics`: HTTP, DB, cache metrics",
        ("http_server_request_duration_seconds_count", "http_route"),
        "bare-db",
    ),
)

_UVICORN = "uvicorn {app} --host 127.0.0.1 --port {port} --no-access-log --log-level warning"
FLAVOURS = (
    Flavour(
        "plain",
        "uvicorn (asyncio + h11)",
        f"{_UVICORN} --loop asyncio --http h11",
        ("uvicorn",),
    ),
    Flavour(
        "standard",
        "uvicorn[standard] (uvloop + httptools)",
        f"{_UVICORN} --loop uvloop --http httptools",
        ("uvicorn", "uvloop", "httptools"),
    ),
    # The arbiter and one worker; uvicorn.workers (deprecated for the uvicorn-worker package,
    # still shipped in uvicorn 0.55) picks uvloop and httptools when installed.
    Flavour(
        "gunicorn-uvicorn",
        "gunicorn -w 1 -k uvicorn.workers.UvicornWorker (arbiter + 1 worker; uvloop + httptools)",
        "gunicorn {app} -k uvicorn.workers.UvicornWorker -w 1 -b 127.0.0.1:{port} "
        "--log-level warning --graceful-timeout 5",
        ("gunicorn", "uvicorn", "uvloop", "httptools"),
    ),
    # -w 1: the parent and one spawned worker, as with more workers; HTTP/1 is always h11.
    Flavour(
        "hypercorn",
        "hypercorn -w 1 -k uvloop (parent + 1 worker; uvloop + h11)",
        "hypercorn {app} -k uvloop -w 1 -b 127.0.0.1:{port} --log-level warning",
        ("hypercorn", "uvloop"),
    ),
    Flavour(
        "granian",
        "granian --interface asgi, 1 worker, 1 single-threaded runtime (parent + 1 worker; uvloop)",
        "granian {app} --interface asgi --host 127.0.0.1 --port {port} --workers 1 "
        "--runtime-mode st --runtime-threads 1 --blocking-threads 1 --loop uvloop --http 1 "
        "--no-ws --log-level warning --no-access-log",
        ("granian", "uvloop"),
    ),
)
DEFAULT_FLAVOURS = ("plain", "standard")


class BenchError(RuntimeError):
    """A run that cannot be trusted: the benchmark stops."""


@dataclass
class Wrk:
    requests: int
    rps: float
    p50_us: float
    p99_us: float


@dataclass
class Run:
    round: int
    flavour: str
    variant: str
    rps: float
    p50_us: float
    p99_us: float
    wrk_requests: int  # warm-up + measurement
    server_cpu_share: float | None  # server CPU time / wall time while wrk measured
    server_cpu_us: float | None  # server CPU time per request while wrk measured
    attempt: int  # 1, or more if earlier attempts were disturbed (see MIN_CPU_SHARE)
    counted: float | None  # requests the variant's own metrics counted for ROUTE
    metrics_bytes: int | None
    metrics_samples: int | None


# --- wrk ---------------------------------------------------------------------------------------

_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def _duration_us(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise BenchError(f"unparseable wrk latency {text!r}")
    return float(match[1]) * _UNITS_US[match[2]]


def parse_wrk(output: str) -> Wrk:
    """Requests/s, p50 and p99 from `wrk --latency` output; errors of any kind are fatal."""
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise BenchError(f"wrk got {errors[1]} non-2xx responses:\n{output}")
    sock = re.search(r"Socket errors: (.*)", output)
    if sock:
        raise BenchError(f"wrk socket errors ({sock[1]}):\n{output}")
    requests = re.search(r"(\d+) requests in", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if not (requests and rps):
        raise BenchError(f"unparseable wrk output:\n{output}")
    return Wrk(
        requests=int(requests[1]),
        rps=float(rps[1]),
        p50_us=_duration_us(p50[1]) if p50 else float("nan"),
        p99_us=_duration_us(p99[1]) if p99 else float("nan"),
    )


def run_wrk(url: str, seconds: int, *, pin: bool, latency: bool) -> Wrk:
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", url]
    if latency:
        cmd.insert(-1, "--latency")
    if pin:
        cmd = ["taskset", "-c", CLIENT_CPU, *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return parse_wrk(done.stdout)


# --- server ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def server_env(variant: Variant) -> dict[str, str]:
    """The parent's environment without OTel/otel-kit settings, so every run is configured
    only by its app module."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FASTAPI_OTEL"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = str(APPS_DIR)  # after the working directory, whose otel_kit comes first
    if variant.name == "contrib":
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = "http"
    return env


def snapshot_otel_kit(workdir: Path) -> None:
    """Copy the otel_kit package into `workdir`, the servers' working directory (first on their
    sys.path), so every round measures the code as it was when the benchmark started."""
    spec = find_spec("otel_kit")
    if spec is None or spec.origin is None:
        raise BenchError("otel_kit is not importable; install the project first")
    shutil.copytree(
        Path(spec.origin).parent,
        workdir / "otel_kit",
        ignore=shutil.ignore_patterns("__pycache__"),
    )


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux), or None where /proc is not available."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float | None:
    """User + system CPU time of the live processes in process group `pgid` (Linux: a server
    and its workers), or None where /proc is not available."""
    total, found = 0.0, False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
            found = True
    return total / os.sysconf("SC_CLK_TCK") if found else None


class Server:
    """The flavour's server for `<module>:app` on a free loopback port, pinned to SERVER_CPU,
    in a process group of its own (its PID), which holds its workers."""

    def __init__(self, variant: Variant, flavour: Flavour, *, pin: bool, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        app, port = f"{variant.module}:app", str(self.port)
        argv = flavour.command.replace("{app}", app).replace("{port}", port).split()
        cmd = [sys.executable, "-m", *argv]
        if pin:
            cmd = ["taskset", "-c", SERVER_CPU, *cmd]  # taskset execs: the PID is the server's
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log,
            stderr=self.log,
            env=server_env(variant),
            cwd=workdir,
            start_new_session=True,
        )

    def cpu_seconds(self) -> float | None:
        return group_cpu_seconds(self.proc.pid)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"server exited ({self.proc.returncode}):\n{self.output()}")
            try:
                status, body = http_get(self.base + PATH, timeout=1.0)
            except OSError:
                time.sleep(0.05)
                continue
            if status == 200 and json.loads(body).get("id") == 1:
                return
            raise BenchError(f"GET {PATH} -> {status} {body!r}")
        raise BenchError(f"server not answering after {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # A worker the server left behind (it should have stopped them): the group is ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def counted_requests(text: str, sample_name: str, route_label: str) -> float:
    """Sum of `sample_name` samples whose `route_label` is the benchmarked route."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name and sample.labels.get(route_label) == ROUTE
    )


def run_one(
    variant: Variant,
    flavour: Flavour,
    round_: int,
    *,
    duration: int,
    warmup: int,
    pin: bool,
    workdir: Path,
    attempt: int,
) -> Run:
    server = Server(variant, flavour, pin=pin, workdir=workdir)
    try:
        server.wait_ready()
        url = server.base + PATH
        warm = run_wrk(url, warmup, pin=pin, latency=False)
        cpu_start, wall_start = server.cpu_seconds(), time.monotonic()
        measured = run_wrk(url, duration, pin=pin, latency=True)
        cpu_end, wall_end = server.cpu_seconds(), time.monotonic()
        share = cpu_us = None
        if cpu_start is not None and cpu_end is not None:
            share = (cpu_end - cpu_start) / (wall_end - wall_start)
            cpu_us = (cpu_end - cpu_start) * 1e6 / measured.requests
        total = warm.requests + measured.requests
        counted = metrics_bytes = metrics_samples = None
        if variant.counter is not None:
            status, body = http_get(server.base + "/metrics")
            if status != 200:
                raise BenchError(f"{variant.name}: GET /metrics -> {status}")
            text = body.decode()
            metrics_bytes = len(body)
            metrics_samples = sum(
                1 for line in text.splitlines() if line and not line.startswith("#")
            )
            counted = counted_requests(text, *variant.counter)
            # wrk's completed requests all went through the middleware, so the variant must
            # have counted at least that many; fewer means the benchmark measured a different,
            # (partly) uninstrumented app.
            if counted <= 0 or counted < total:
                name, label = variant.counter
                raise BenchError(
                    f"{variant.name} ({flavour.name}): {name}{{{label}={ROUTE!r}}} sums to "
                    f"{counted:g}, but wrk completed {total} requests. /metrics:\n{text}"
                )
        if server.proc.poll() is not None:
            raise BenchError(f"server died during the run:\n{server.output()}")
    finally:
        server.stop()
    return Run(
        round=round_,
        flavour=flavour.name,
        variant=variant.name,
        rps=measured.rps,
        p50_us=measured.p50_us,
        p99_us=measured.p99_us,
        wrk_requests=total,
        server_cpu_share=share,
        server_cpu_us=cpu_us,
        attempt=attempt,
        counted=counted,
        metrics_bytes=metrics_bytes,
        metrics_samples=metrics_samples,
    )


# --- results -----------------------------------------------------------------------------------


def summarise(runs: list[Run], flavour: str, variants: list[Variant]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for variant in variants:
        base = [r for r in runs if r.flavour == flavour and r.variant == variant.baseline]
        bare_by_round = {r.round: r.rps for r in base}
        bare_median = statistics.median(bare_by_round.values()) if bare_by_round else None
        bare_cpu = _median_cpu_us(base)
        mine = [r for r in runs if r.flavour == flavour and r.variant == variant.name]
        if not mine:
            continue
        rps = [r.rps for r in mine]
        median_rps = statistics.median(rps)
        ratios = [r.rps / bare_by_round[r.round] for r in mine if r.round in bare_by_round]
        cpu_us = _median_cpu_us(mine)
        # Each round's run against the same round's baseline run: a slow phase of the machine
        # hits both, so the spread of these differences is the measurement's own.
        base_by_round = {r.round: r for r in base}
        pairs = [
            1e6 / r.rps - 1e6 / base_by_round[r.round].rps for r in mine if r.round in base_by_round
        ]
        cpu_pairs = [
            r.server_cpu_us - b.server_cpu_us
            for r in mine
            if (b := base_by_round.get(r.round)) is not None
            and r.server_cpu_us is not None
            and b.server_cpu_us is not None
        ]
        rows.append(
            {
                "variant": variant.name,
                "baseline": variant.baseline,
                "description": variant.description,
                "rounds": len(mine),
                "rps_median": median_rps,
                "rps_min": min(rps),
                "rps_max": max(rps),
                "ratio_to_bare": statistics.median(ratios) if ratios else None,
                "us_added_per_request": (
                    1e6 / median_rps - 1e6 / bare_median if bare_median else None
                ),
                "server_cpu_us_per_request": cpu_us,
                "server_cpu_us_added": (
                    cpu_us - bare_cpu if cpu_us is not None and bare_cpu is not None else None
                ),
                "us_added_pairs": _quartiles(pairs),
                "server_cpu_us_added_pairs": _quartiles(cpu_pairs),
                "p50_us": statistics.median(r.p50_us for r in mine),
                "p99_us": statistics.median(r.p99_us for r in mine),
                "metrics_bytes": mine[-1].metrics_bytes,
                "metrics_samples": mine[-1].metrics_samples,
            }
        )
    return rows


def _quartiles(values: list[float]) -> list[float] | None:
    """[Q1, median, Q3] of `values` (all three the value itself for one), None for none."""
    if not values:
        return None
    if len(values) == 1:
        return values * 3
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return [q1, median, q3]


def _pairs_cell(quartiles: list[float] | None) -> str:
    if quartiles is None:
        return "-"
    q1, median, q3 = quartiles
    return f"{median:+.1f} ({q1:+.1f} .. {q3:+.1f})"


def _median_cpu_us(runs: list[Run]) -> float | None:
    values = [r.server_cpu_us for r in runs if r.server_cpu_us is not None]
    return statistics.median(values) if values else None


def _ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | req/s (median) | spread (min-max) | x baseline | µs added / req "
        "| µs added, pairs: median (IQR) | server CPU µs / req (added) "
        "| CPU µs added, pairs: median (IQR) | p50 | p99 | /metrics |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = row["ratio_to_bare"]
        added = row["us_added_per_request"]
        cpu, cpu_added = row["server_cpu_us_per_request"], row["server_cpu_us_added"]
        cpu_cell = "-" if cpu is None else f"{cpu:.0f}"
        if cpu_added is not None:
            cpu_cell += f" ({cpu_added:+.0f})"
        size = row["metrics_bytes"]
        scrape = "-" if size is None else f"{size:,} B, {row['metrics_samples']} samples"
        lines.append(
            f"| {row['variant']} | {row['rps_median']:,.0f} "
            f"| {row['rps_min']:,.0f}-{row['rps_max']:,.0f} "
            f"| {'-' if ratio is None else f'{ratio:.2f}'} "
            f"| {'-' if added is None else f'{added:+.0f}'} "
            f"| {_pairs_cell(row.get('us_added_pairs'))} | {cpu_cell} "
            f"| {_pairs_cell(row.get('server_cpu_us_added_pairs'))} "
            f"| {_ms(row['p50_us'])} | {_ms(row['p99_us'])} "
            f"| {scrape} |"
        )
    return "\n".join(lines)


def environment(pin: bool) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = models[0].split(":", 1)[1].strip() if models else cpu

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--", "../otel_kit"):
        commit += "+dirty"  # otel_kit/ has uncommitted changes: this is what was measured
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit or None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "pinned": pin,
        "wrk": wrk_version.split(" [")[0].strip() if wrk_version else None,
        "packages": {
            dist: version(dist)
            for dist in (
                "otel-kit",
                "fastapi",
                "starlette",
                "uvicorn",
                "gunicorn",
                "hypercorn",
                "granian",
                "uvloop",
                "httptools",
                "prometheus-client",
                "prometheus-fastapi-instrumentator",
                "starlette-exporter",
                "opentelemetry-sdk",
                "opentelemetry-instrumentation-fastapi",
                "opentelemetry-exporter-prometheus",
            )
        },
    }


def render_markdown(result: dict[str, Any]) -> str:
    cfg, env = result["config"], result["environment"]
    pinning = (
        f"the server pinned to CPU {SERVER_CPU}, wrk to CPU {CLIENT_CPU} (taskset)"
        if env["pinned"]
        else "not pinned"
    )
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    out = [
        "# HTTP overhead of metrics libraries on a trivial FastAPI app",
        "",
        "Generated by `bench/http_overhead.py`; see `bench/README.md`.",
        "",
        f"- Load: `GET {PATH}` with `wrk -t1 -c{CONNECTIONS} -d{cfg['duration']}s --latency` "
        f"after a {cfg['warmup']} s warm-up; {pinning}.",
        f"- {cfg['rounds']} interleaved round(s); req/s, p50 and p99 are medians over rounds; "
        "x baseline is the median of per-round ratios to that round's baseline (`bare`, or "
        "`bare-db` for the realistic route); µs added / req = 1e6/rps - 1e6/rps(baseline), "
        "the extra server time per request.",
        "- µs added, pairs: per round, the run's 1e6/rps minus the same round's baseline "
        "run's (for the CPU column: server CPU µs per request minus the baseline's); the median "
        "of these per-pair differences over rounds and their interquartile range (Q1 .. Q3). "
        "Prefer these on a shared machine: a slow phase hits both runs of a pair.",
        "- server CPU µs / req: the CPU time (from /proc) of the server's processes (its "
        "process group: a master or parent besides the worker too) over the requests "
        "wrk completed, median over rounds, and in brackets its difference to bare. It moves "
        "less than req/s when other processes share the machine, though under heavy load "
        "every request costs more CPU too (caches, frequency).",
        f"- A run is repeated (up to {cfg.get('attempts', ATTEMPTS)} attempt(s) in all) when "
        f"the server got less than {MIN_CPU_SHARE:.0%} of its core while wrk measured.",
        "- Every instrumented run's own /metrics counted at least the requests wrk completed "
        "for `/items/{item_id}` (checked per run); /metrics is its size after the last round.",
        f"- {env['date']}, commit {env['git_commit']}, Python {env['python']}, "
        f"{env['cpu']} ({env['cpus']} CPUs), {env['wrk']}.",
        f"- {packages}.",
        *(f"- {note}" for note in result["notes"]),
        "",
    ]
    for flavour in FLAVOURS:
        rows = result["summary"].get(flavour.name)
        if rows:
            out += [f"## {flavour.description}", ""]
            if flavour.name in cfg["flavours"]:
                out += [f"`{cfg['flavours'][flavour.name]}`", ""]
            out += [markdown_table(rows), ""]
    out += ["Variants:", ""]
    out += [f"- **{v.name}**: {v.description}" for v in VARIANTS if v.name in cfg["variants"]]
    out.append("")
    return "\n".join(out)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=int, help="seconds per measured run (default 4)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 7)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 s runs, 1 s warm-up, 1 round"
    )
    parser.add_argument(
        "--variants",
        default=",".join(v.name for v in VARIANTS),
        help="comma-separated subset of: " + ", ".join(v.name for v in VARIANTS),
    )
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_FLAVOURS),
        help="comma-separated subset of:\n"
        + "\n".join(f"  {f.name}: {f.description}" for f in FLAVOURS),
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=ATTEMPTS,
        help=f"tries per run for the server to get its core (default {ATTEMPTS}); 1 where no "
        "run gets it (a busy machine): repeats only cost time",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="output dir")
    parser.add_argument(
        "--name", default="results", help="output files: <out>/<name>.json and .md (results)"
    )
    parser.add_argument(
        "--note", action="append", default=[], help="a line for the results' header (repeatable)"
    )
    args = parser.parse_args(argv)
    args.warmup = 1 if args.quick else 2
    if args.duration is None:
        args.duration = 2 if args.quick else 4
    if args.rounds is None:
        args.rounds = 1 if args.quick else 7
    known = {v.name for v in VARIANTS}
    wanted = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = set(wanted) - known
    if unknown or not wanted:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {sorted(known)}")
    args.variant_list = [v for v in VARIANTS if v.name in wanted]
    servers = {f.name for f in FLAVOURS}
    wanted = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = set(wanted) - servers
    if unknown or not wanted:
        parser.error(f"unknown servers {sorted(unknown)}; choose from {sorted(servers)}")
    args.flavour_list = [f for f in FLAVOURS if f.name in wanted]
    if args.duration < 1 or args.rounds < 1 or args.attempts < 1:
        parser.error("--duration, --rounds and --attempts must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    notes: list[str] = list(args.note)
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    pin = shutil.which("taskset") is not None and {0, 1} <= affinity
    if not pin:
        notes.append("Not pinned: taskset missing or CPUs 0 and 1 not both available.")
    flavours = []
    for flavour in args.flavour_list:
        missing = [module for module in flavour.needs if find_spec(module) is None]
        if missing:
            notes.append(f"{flavour.description} skipped: {', '.join(missing)} not importable.")
        else:
            flavours.append(flavour)

    if not flavours:
        raise SystemExit("no server to run: " + " ".join(notes))
    env = environment(pin)  # the git state of the otel_kit snapshot taken next
    runs: list[Run] = []
    repeated = 0
    total = args.rounds * len(flavours) * len(args.variant_list)
    with tempfile.TemporaryDirectory(prefix="otel-kit-bench-") as tmp:
        workdir = Path(tmp)
        snapshot_otel_kit(workdir)
        for round_ in range(1, args.rounds + 1):
            for flavour in flavours:
                for variant in args.variant_list:
                    attempts: list[Run] = []
                    for attempt in range(1, args.attempts + 1):
                        run = run_one(
                            variant,
                            flavour,
                            round_,
                            duration=args.duration,
                            warmup=args.warmup,
                            pin=pin,
                            workdir=workdir,
                            attempt=attempt,
                        )
                        attempts.append(run)
                        share = run.server_cpu_share
                        counted = "" if run.counted is None else f", counted {run.counted:,.0f}"
                        print(
                            f"[{len(runs) + 1}/{total}] round {round_} {flavour.name:16} "
                            f"{variant.name:18} {run.rps:9,.0f} req/s  p50 {_ms(run.p50_us)}  "
                            f"p99 {_ms(run.p99_us)}  (wrk {run.wrk_requests:,}{counted}"
                            f"{'' if share is None else f', server CPU {share:.0%}'})",
                            file=sys.stderr,
                            flush=True,
                        )
                        if not pin or share is None or share >= MIN_CPU_SHARE:
                            break
                        if attempt < args.attempts:
                            print("  another process took CPU: run repeated", file=sys.stderr)
                    # The undisturbed attempt, or if none, the one that got the most CPU.
                    runs.append(max(attempts, key=lambda r: r.server_cpu_share or 0.0))
                    repeated += len(attempts) - 1
    low = [r for r in runs if r.server_cpu_share is not None and r.server_cpu_share < MIN_CPU_SHARE]
    if pin and low:
        notes.append(
            f"{len(low)} run(s) kept although the server got < {MIN_CPU_SHARE:.0%} of its core "
            f"after {args.attempts} attempt(s) (machine busy): "
            + (
                f"all of them (it got {min(r.server_cpu_share or 0.0 for r in low):.0%} to "
                f"{max(r.server_cpu_share or 0.0 for r in low):.0%})"
                if len(low) == len(runs)
                else ", ".join(f"{r.flavour}/{r.variant} round {r.round}" for r in low)
            )
        )
    if repeated:
        notes.append(f"{repeated} run(s) repeated because another process took the server's CPU.")

    result: dict[str, Any] = {
        "config": {
            "duration": args.duration,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "attempts": args.attempts,
            "connections": CONNECTIONS,
            "path": PATH,
            "variants": [v.name for v in args.variant_list],
            "flavours": {f.name: f"python -m {f.command}" for f in flavours},
        },
        "environment": env,
        "notes": notes,
        "summary": {f.name: summarise(runs, f.name, args.variant_list) for f in flavours},
        "runs": [asdict(r) for r in runs],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = render_markdown(result)
    (args.out / f"{args.name}.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
