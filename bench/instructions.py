"""Instructions per request, bare vs instrumented, counted by callgrind: no neighbour moves it.

    .venv/bin/python bench/instructions.py                   # all variants, ~5 minutes
    .venv/bin/python bench/instructions.py --variants bare-db,otel-kit-db --requests 500

Each variant (a bench/apps module) runs in its own `valgrind --tool=callgrind` process, which
drives the app's ASGI callable in-process (no sockets, no server: a minimal driver hands it a
scope, a receive and a send): a warm-up, then callgrind's counters are zeroed, `--requests`
requests are driven and the counters dumped. The app's own /metrics must have counted exactly
warm-up + requests. Instructions per request are the dumped total over the requests.

`--wall` also times the same driver natively: many short interleaved rounds (bare, then
instrumented, ...), reported as the median of per-pair differences and its interquartile range.
Writes instructions.json/.md (default bench/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
APPS_DIR = BENCH_DIR / "apps"
PATH = "/items/1"
ROUTE = "/items/{item_id}"


@dataclass(frozen=True)
class Variant:
    name: str
    module: str
    baseline: str  # the uninstrumented variant it is compared with
    description: str
    env: tuple[tuple[str, str], ...] = ()


VARIANTS = (
    Variant("bare", "bare", "bare", "trivial route, no metrics"),
    Variant("otel-kit", "otel_kit_app", "bare", "trivial route, `setup_metrics(app)`"),
    Variant("bare-db", "bare_db", "bare-db", "realistic route, no metrics"),
    Variant(
        "otel-kit-db",
        "otel_kit_db",
        "bare-db",
        "realistic route, `setup_metrics(app)` + `@cache_metrics`: HTTP, DB, cache",
    ),
    # The breakdown: the realistic route with one part of the instrumentation left out.
    Variant(
        "otel-kit-db-no-sqlalchemy",
        "otel_kit_db",
        "bare-db",
        "as otel-kit-db with `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=sqlalchemy`: HTTP + cache",
        (("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "sqlalchemy"),),
    ),
    Variant(
        "otel-kit-db-http-only",
        "otel_kit_db",
        "bare-db",
        "as otel-kit-db-no-sqlalchemy with the lookup undecorated: HTTP only",
        (("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "sqlalchemy"), ("BENCH_NO_CACHE_METRICS", "1")),
    ),
)
BY_NAME = {v.name: v for v in VARIANTS}


# --- the in-process driver (runs inside the measured process) ---------------------------------


def load_app(variant: Variant) -> Any:
    os.environ.update(dict(variant.env))
    sys.path.insert(0, str(APPS_DIR))
    return importlib.import_module(variant.module).app


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _request(app: Any, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(_scope(path), receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


async def drive(app: Any, n: int) -> None:
    for _ in range(n):
        status, _body = await _request(app, PATH)
        if status != 200:
            raise SystemExit(f"GET {PATH} -> {status}")


def counted(app: Any) -> float | None:
    """The app's own count of requests to ROUTE from its /metrics, None for a bare app."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = asyncio.run(_request(app, "/metrics"))
    if status == 404:
        return None
    return sum(
        s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "http_server_request_duration_seconds_count"
        and s.labels.get("http_route") == ROUTE
    )


def child(variant: Variant, warmup: int, requests: int, out: Path) -> None:
    """Inside callgrind: warm up, zero the counters, drive `requests`, dump, check the count."""
    app = load_app(variant)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(drive(app, warmup))
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
    loop.run_until_complete(drive(app, requests))
    subprocess.run(["callgrind_control", "-d", "measured", pid], check=True, capture_output=True)
    loop.close()
    out.write_text(json.dumps({"counted": counted(app)}))


# --- the parent -------------------------------------------------------------------------------


def measure(
    variant: Variant, warmup: int, requests: int, tmp: Path, keep: Path | None
) -> dict[str, Any]:
    prefix = tmp / variant.name
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={prefix}.%p",
        sys.executable,
        __file__,
        "--child",
        variant.name,
        "--warmup",
        str(warmup),
        "--requests",
        str(requests),
        "--out",
        str(tmp),
    ]
    env = child_env(tmp)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{variant.name}: callgrind run failed:\n{done.stderr[-4000:]}")
    dumps = [p for p in tmp.glob(f"{variant.name}.*") if p.suffix != ".json"]
    measured = [p for p in dumps if "Trigger: dump measured" in p.read_text(errors="replace")]
    if len(measured) != 1:
        raise SystemExit(f"{variant.name}: expected one measured dump, got {measured}")
    summary = re.search(r"^summary: (\d+)", measured[0].read_text(), re.MULTILINE)
    if summary is None:
        raise SystemExit(f"{variant.name}: no summary in {measured[0]}")
    result = json.loads((tmp / f"{variant.name}.json").read_text())
    if result["counted"] is not None and result["counted"] != warmup + requests:
        raise SystemExit(
            f"{variant.name}: /metrics counted {result['counted']}, sent {warmup + requests}"
        )
    if keep is not None:  # for callgrind_annotate
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(measured[0], keep / f"callgrind.out.{variant.name}")
    for path in dumps:
        path.unlink()
    return {
        "variant": variant.name,
        "instructions": int(summary[1]),
        "per_request": int(summary[1]) / requests,
        "counted": result["counted"],
    }


def snapshot_otel_kit(workdir: Path) -> None:
    """Copy the otel_kit package into `workdir` (first on the children's path), so every
    variant measures the code as it was when the benchmark started, whatever is edited since."""
    spec = importlib.util.find_spec("otel_kit")
    if spec is None or spec.origin is None:
        raise SystemExit("otel_kit is not importable; install the project first")
    shutil.copytree(
        Path(spec.origin).parent, workdir / "otel_kit", ignore=shutil.ignore_patterns("__pycache__")
    )


def child_env(workdir: Path) -> dict[str, str]:
    """The parent's environment without OTel/otel-kit/bench settings (each variant sets its
    own), with the otel_kit snapshot first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BENCH_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = str(workdir)
    return env


def wall(
    variants: list[Variant], rounds: int, requests: int, workdir: Path
) -> dict[str, dict[str, float]]:
    """Native µs per request: each variant in its own process, all started once, then driven
    in interleaved short rounds; per-pair differences against each round's baseline, for the
    wall time and for the process's CPU time (a sync route waits on its thread pool)."""
    procs = {
        v.name: subprocess.Popen(
            [sys.executable, __file__, "--serve", v.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(workdir),
        )
        for v in variants
    }

    def one(name: str) -> tuple[float, float]:
        proc = procs[name]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"{requests}\n")
        proc.stdin.flush()
        wall_us, cpu_us = proc.stdout.readline().split()
        return float(wall_us), float(cpu_us)

    samples: dict[str, dict[str, list[float]]] = {
        v.name: {"wall": [], "cpu": [], "wall_added": [], "cpu_added": []} for v in variants
    }
    try:
        for v in variants:
            one(v.name)  # warm-up
        for _ in range(rounds):
            times = {v.name: one(v.name) for v in variants}
            for v in variants:
                mine, base = times[v.name], times[v.baseline]
                row = samples[v.name]
                row["wall"].append(mine[0])
                row["cpu"].append(mine[1])
                row["wall_added"].append(mine[0] - base[0])
                row["cpu_added"].append(mine[1] - base[1])
    finally:
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
    out: dict[str, dict[str, float]] = {}
    for name, row in samples.items():
        out[name] = {
            "wall_us": statistics.median(row["wall"]),
            "cpu_us": statistics.median(row["cpu"]),
        }
        for key in ("wall_added", "cpu_added"):
            q1, median, q3 = statistics.quantiles(row[key], n=4, method="inclusive")
            out[name] |= {key: median, f"{key}_q1": q1, f"{key}_q3": q3}
    return out


def serve(variant: Variant) -> None:
    """For --wall: read a request count per line, drive them, print wall and CPU µs each."""
    app = load_app(variant)
    loop = asyncio.new_event_loop()
    for line in sys.stdin:
        n = int(line)
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        loop.run_until_complete(drive(app, n))
        wall_us = (time.perf_counter() - wall_start) * 1e6 / n
        print(wall_us, (time.process_time() - cpu_start) * 1e6 / n, flush=True)


def render(result: dict[str, Any]) -> str:
    cfg, env = result["config"], result["environment"]
    rows = {r["variant"]: r for r in result["instructions"]}
    lines = [
        "# Instructions per request (callgrind), bare vs instrumented",
        "",
        "Generated by `bench/instructions.py`; see `bench/README.md`.",
        "",
        f"- {cfg['requests']:,} in-process ASGI requests `GET {PATH}` per variant (after "
        f"{cfg['warmup']} warm-up requests), driven through the app's ASGI callable by a "
        "minimal driver on an asyncio loop: no sockets, no server, no HTTP parser. Counted "
        "by `valgrind --tool=callgrind` between a zero and a dump of its counters; every "
        "instrumented app's /metrics counted exactly the requests sent.",
        "- Instructions do not depend on other processes; they are not time. The ≈ µs column "
        "converts with the trivial bare route's native CPU ns per instruction (below), which "
        "holds only roughly for the added code: the native section measures time itself.",
        f"- {env['date']}, commit {env['git_commit']}, Python {env['python']}, {env['cpu']}.",
        "",
        "| variant | instructions / request | added vs baseline | added, ≈ µs |",
        "|---|---:|---:|---:|",
    ]
    ns_per_instr = result.get("ns_per_instruction", {})
    for name, row in rows.items():
        v = BY_NAME[name]
        base = rows.get(v.baseline)
        added = row["per_request"] - base["per_request"] if base else None
        # The trivial route's rate for every row: the added code is plain Python like it, while
        # the realistic baseline's CPU per instruction includes its thread pool's hand-offs.
        factor = ns_per_instr.get("bare", ns_per_instr.get(v.baseline))
        us = f"{added * factor / 1000:+.1f}" if added is not None and factor else "-"
        lines.append(
            f"| {name} | {row['per_request']:,.0f} "
            f"| {'-' if added is None else f'{added:+,.0f}'} | {us} |"
        )
    if result.get("wall"):
        lines += [
            "",
            f"## Native, {cfg['wall_rounds']} interleaved rounds of {cfg['wall_requests']} "
            "requests",
            "",
            "Each variant in its own process, driven in turn round after round; the medians of "
            "per-round µs per request, and of the per-pair differences to the same round's "
            "baseline with their interquartile range (Q1 .. Q3). CPU is the process's CPU time "
            "(the realistic route's wall time includes waiting for its thread pool).",
            "",
            "| variant | wall µs / req | CPU µs / req | wall added (IQR) | CPU added (IQR) |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, w in result["wall"].items():
            lines.append(
                f"| {name} | {w['wall_us']:.1f} | {w['cpu_us']:.1f} "
                f"| {w['wall_added']:+.1f} ({w['wall_added_q1']:+.1f} .. "
                f"{w['wall_added_q3']:+.1f}) "
                f"| {w['cpu_added']:+.1f} ({w['cpu_added_q1']:+.1f} .. {w['cpu_added_q3']:+.1f}) |"
            )
        if ns_per_instr:
            lines += [
                "",
                "ns per instruction (a baseline's native CPU µs over its callgrind "
                "instructions), used for the ≈ µs column: "
                + ", ".join(f"{k} {x:.3f}" for k, x in ns_per_instr.items()),
            ]
    lines += ["", "Variants:", ""]
    lines += [f"- **{v.name}**: {v.description}" for v in VARIANTS if v.name in rows]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
    parser.add_argument("--requests", type=int, default=2000, help="measured requests")
    parser.add_argument("--warmup", type=int, default=200, help="requests before counting")
    parser.add_argument("--wall", action="store_true", help="also time natively")
    parser.add_argument("--wall-rounds", type=int, default=41)
    parser.add_argument("--wall-requests", type=int, default=400)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps into this dir")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(BY_NAME[args.child], args.warmup, args.requests, args.out / f"{args.child}.json")
        return 0
    if args.serve:
        serve(BY_NAME[args.serve])
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = set(names) - set(BY_NAME)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {sorted(BY_NAME)}")
    # Baselines are always measured: every row is a difference to one.
    chosen = [
        v for v in VARIANTS if v.name in names or v.name in {BY_NAME[n].baseline for n in names}
    ]
    rows = []
    wall_result = None
    with tempfile.TemporaryDirectory(prefix="otel-kit-instr-") as tmp:
        snapshot_otel_kit(Path(tmp))
        for v in chosen:
            row = measure(v, args.warmup, args.requests, Path(tmp), args.keep)
            print(f"{v.name:28} {row['per_request']:12,.0f} instructions/request", file=sys.stderr)
            rows.append(row)
        if args.wall:
            wall_result = wall(chosen, args.wall_rounds, args.wall_requests, Path(tmp))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "../otel_kit"],
        cwd=BENCH_DIR,
        capture_output=True,
        text=True,
    ).stdout.strip()
    models = [
        ln.split(":", 1)[1].strip()
        for ln in Path("/proc/cpuinfo").read_text().splitlines()
        if ln.startswith("model name")
    ]
    result: dict[str, Any] = {
        "config": {
            "requests": args.requests,
            "warmup": args.warmup,
            "wall_rounds": args.wall_rounds,
            "wall_requests": args.wall_requests,
        },
        "environment": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_commit": commit + ("+dirty" if dirty else ""),
            "python": platform.python_version(),
            "cpu": models[0] if models else platform.processor(),
        },
        "instructions": rows,
    }
    if wall_result is not None:
        result["wall"] = wall_result
        per = {r["variant"]: r["per_request"] for r in rows}
        result["ns_per_instruction"] = {
            v.name: result["wall"][v.name]["cpu_us"] * 1000 / per[v.name]
            for v in chosen
            if v.baseline == v.name
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "instructions.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = render(result)
    (args.out / "instructions.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
