"""Soak: the example shop under a long mixed load; memory and series must stop growing.

    .venv/bin/python bench/soak.py [--requests 200000] [--chunk 10000] [--warmup 20000]

Starts `uvicorn examples.shop.app:app` on loopback (SQLite file database in a temporary
directory, the in-process user cache, an outbound httpx call to its own /payments/authorize per
order) and drives it with wrk (`bench/wrk_mix.lua`, mix "shop": user cache hits and misses,
orders, order lookups, unmatched paths, sessions, /error) in chunks of exactly --chunk requests.
After each chunk it samples the server's RSS (psutil), /metrics (bytes, samples) and the
chunk's requests/s. Verdict: from the end of warm-up on, the number of samples never changes
and RSS grows by less than --max-rss-growth MB; and /metrics counted every request sent.
Writes soak.json/.md (default bench/results/); exits 1 if the verdict fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from http_overhead import BenchError, environment, free_port, http_get  # bench/: the script's dir
from prometheus_client.parser import text_string_to_metric_families

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MIX = BENCH / "wrk_mix.lua"
CONNECTIONS = 16
SERVER_CPU, CLIENT_CPU = "0", "1"
REQUESTS = "http_server_request_duration_seconds"


def counts(text: str) -> dict[str, float]:
    """Requests per "<http_route> <status>" from the exposition ("(no route) 404": unmatched)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS:
            for sample in family.samples:
                if sample.name == REQUESTS + "_count":
                    route = sample.labels.get("http_route", "(no route)")
                    key = f"{route} {sample.labels['http_response_status_code']}"
                    out[key] = out.get(key, 0) + sample.value
    return out


def sample(base: str, process: psutil.Process, requests: int, rps: float | None) -> dict[str, Any]:
    status, body = http_get(base + "/metrics", timeout=30)
    if status != 200:
        raise BenchError(f"GET /metrics -> {status}")
    text = body.decode()
    return {
        "requests": requests,
        "rss_bytes": process.memory_info().rss,  # after the scrape: its buffers are included
        "samples": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
        "metrics_bytes": len(body),
        "rps": rps,
        "counts": counts(text),
    }


def run_wrk(base: str, budget: int, first: int, pin: bool) -> float:
    """Send exactly `budget` requests of the shop mix; returns requests/s."""
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", "-d600s", "-s", str(MIX), base]
    cmd += ["--", "shop", str(budget), str(first)]
    if pin:
        cmd = ["taskset", "-c", CLIENT_CPU, *cmd]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=660, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return budget / elapsed


def soak(args: argparse.Namespace, pin: bool, workdir: Path) -> list[dict[str, Any]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "uvicorn", "examples.shop.app:app", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    if pin:
        cmd = ["taskset", "-c", SERVER_CPU, *cmd]  # taskset execs: the PID is uvicorn's
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FASTAPI_OTEL"))}
    env["SHOP_DATABASE_URL"] = f"sqlite:///{workdir / 'shop.db'}"
    with open(workdir / "server.log", "wb") as log:  # /error's tracebacks go there
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        for _ in range(300):
            if server.poll() is not None:
                log_text = (workdir / "server.log").read_text(errors="replace")
                raise BenchError(f"the shop exited ({server.returncode}):\n{log_text}")
            try:
                http_get(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise BenchError("the shop did not answer within 30 s")
        process = psutil.Process(server.pid)
        samples = [sample(base, process, 0, None)]
        sent = 0
        while sent < args.requests:
            budget = min(args.chunk, args.requests - sent)
            rps = run_wrk(base, budget, sent, pin)
            sent += budget
            samples.append(sample(base, process, sent, rps))
            row = samples[-1]
            print(
                f"{sent:>9,} requests  RSS {row['rss_bytes'] / 2**20:6.1f} MB  "
                f"{row['samples']:>4} samples  /metrics {row['metrics_bytes']:>7,} B  "
                f"{rps:7,.0f} req/s",
                file=sys.stderr,
                flush=True,
            )
        return samples
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def verdict(args: argparse.Namespace, samples: list[dict[str, Any]]) -> dict[str, Any]:
    after = [s for s in samples if s["requests"] >= args.warmup]
    final = samples[-1]["counts"]
    # Every order makes one outbound call that the shop serves itself: counted, not sent.
    payments = final.get("/payments/authorize 200", 0)
    counted = sum(final.values()) - payments
    growth = after[-1]["rss_bytes"] - after[0]["rss_bytes"]
    checks = {
        "every request counted": counted == args.requests,
        "one outbound call per order": payments == final.get("/orders 201"),
        "samples constant after warm-up": len({s["samples"] for s in after}) == 1,
        "RSS growth after warm-up below limit": growth < args.max_rss_growth * 2**20,
    }
    return {
        "counted": counted,
        "samples_after_warmup": sorted({s["samples"] for s in after}),
        "rss_growth_after_warmup_bytes": growth,
        "checks": checks,
        "passed": all(checks.values()),
    }


def render_markdown(result: dict[str, Any]) -> str:
    cfg, env, v = result["config"], result["environment"], result["verdict"]
    mb = 2**20
    lines = [
        "# Soak: the example shop under a long mixed load",
        "",
        "Generated by `bench/soak.py`; see `bench/README.md`.",
        "",
        f"- {cfg['requests']:,} requests of the `shop` mix of `bench/wrk_mix.lua` "
        f"(wrk -t1 -c{CONNECTIONS}) in chunks of {cfg['chunk']:,}; one uvicorn process "
        f"(uvicorn defaults), SQLite file database, local user cache, outbound call per order"
        f"{'; uvicorn and wrk pinned to one CPU each' if env['pinned'] else ''}.",
        f"- Warm-up: the first {cfg['warmup']:,} requests. Verdict "
        f"{'PASSED' if v['passed'] else 'FAILED'}: "
        + "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in v["checks"].items())
        + f" (RSS growth after warm-up {v['rss_growth_after_warmup_bytes'] / mb:+.2f} MB, "
        f"limit {cfg['max_rss_growth_mb']} MB; samples after warm-up "
        f"{v['samples_after_warmup']}; requests counted {v['counted']:,.0f}).",
        f"- {env['date']}, commit {env['git_commit']}, Python {env['python']}, "
        f"{env['cpu']} ({env['cpus']} CPUs), {env['wrk']}.",
        "",
        "| requests | RSS | samples | /metrics | req/s (chunk) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for s in result["samples"]:
        rps = "-" if s["rps"] is None else f"{s['rps']:,.0f}"
        lines.append(
            f"| {s['requests']:,} | {s['rss_bytes'] / mb:.1f} MB | {s['samples']} "
            f"| {s['metrics_bytes']:,} B | {rps} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="requests between samples")
    parser.add_argument("--warmup", type=int, default=20_000, help="requests before the verdict")
    parser.add_argument("--max-rss-growth", type=float, default=8.0, help="MB after warm-up")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    if not 0 < args.warmup < args.requests or args.chunk < 1:
        parser.error("need 0 < --warmup < --requests and --chunk >= 1")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    pin = shutil.which("taskset") is not None and {0, 1} <= affinity
    env = environment(pin)
    with tempfile.TemporaryDirectory(prefix="otel-kit-soak-") as tmp:
        samples = soak(args, pin, Path(tmp))
    result: dict[str, Any] = {
        "config": {
            "requests": args.requests,
            "chunk": args.chunk,
            "warmup": args.warmup,
            "max_rss_growth_mb": args.max_rss_growth,
            "connections": CONNECTIONS,
        },
        "environment": env,
        "verdict": verdict(args, samples),
        "samples": samples,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = render_markdown(result)
    (args.out / "soak.md").write_text(markdown)
    print(markdown)
    return 0 if result["verdict"]["passed"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"SOAK FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
