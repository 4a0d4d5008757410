"""Memory per series: RSS growth per 1,000 route/status series and per 1,000 user-metric series.

    .venv/bin/python bench/memory.py                      # ~8 minutes
    .venv/bin/python bench/memory.py --sizes 1000,3000 --repeats 2 --trace

Every measurement is a fresh process (the otel_kit snapshot and environment of
bench/instructions.py). HTTP: a bench/apps module's app gets `/r<i>/{code}` routes answering
status `code`, one of STATUSES; requests through the ASGI driver of bench/instructions.py
(in-process, no server) to N distinct route/status pairs make N series. Before them: a warm-up
on another route (every status) and one scrape of /metrics, so lazily made state exists; then
gc, malloc_trim and RSS (/proc/self/statm). After the N requests, one more scrape (the export
state of the new series is included), gc, malloc_trim, RSS again. User metrics: the same with
`counter.add`/`histogram.record` on N new label values, the OTel API after `setup_metrics()`
against prometheus_client.

Bytes per series is the slope between the sizes (the interpreter's own noise cancels), the
median over `--repeats` processes; HTTP rows also net of the bare app's slope (the routes and
requests themselves). Exported series are the sample lines /metrics gained per route/status.
`--trace` reruns otel-kit's cases at the largest size under tracemalloc: traced bytes per
series and the top allocation sites. Writes memory.json/.md (default bench/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from instructions import APPS_DIR, BENCH_DIR, _request, child_env, snapshot_otel_kit

STATUSES = (200, 201, 202, 400, 401, 403, 404, 409, 422, 429)
LIMIT = "1000000"  # otel-kit's cardinality limit for the run: no series may overflow


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "http": a bench/apps module; "user": a user metric
    target: str  # the module, or the user metric's library and instrument
    description: str


CASES = (
    Case("bare", "http", "bare", "the trivial app, no metrics: the routes' own cost"),
    Case("otel-kit", "http", "otel_kit_app", "`setup_metrics(app)`"),
    Case("handwritten", "http", "handwritten", "hand-written prometheus_client middleware"),
    Case("pfi", "http", "pfi", "prometheus-fastapi-instrumentator, defaults"),
    Case("starlette-exporter", "http", "starlette_exporter_app", "starlette-exporter, defaults"),
    Case("otel counter", "user", "otel.counter", "OTel API `Counter.add` after setup_metrics()"),
    Case("otel histogram", "user", "otel.histogram", "OTel API `Histogram.record`"),
    Case("prometheus_client counter", "user", "prom.counter", "`Counter.labels(v).inc()`"),
    Case(
        "prometheus_client histogram", "user", "prom.histogram", "`Histogram.labels(v).observe()`"
    ),
)
BY_NAME = {c.name: c for c in CASES}
TRACED = (  # tracemalloc is slow on the HTTP cases (every request allocates): otel-kit's only
    "otel-kit",
    "otel counter",
    "otel histogram",
    "prometheus_client counter",
    "prometheus_client histogram",
)

# --- inside the measured process --------------------------------------------------------------


def rss() -> int:
    """Resident bytes after a full collection, with freed heap handed back to the system."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def samples(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def http_case(module: str, n: int) -> tuple[Callable[[], None], Callable[[], int]]:
    """(make the n series, scrape and return its sample count) for a bench/apps module."""
    from fastapi import Response

    sys.path.insert(0, str(APPS_DIR))
    app = importlib.import_module(module).app

    async def answer(code: int) -> Response:
        return Response(status_code=code)

    routes = -(-n // len(STATUSES))
    for i in range(routes):
        app.add_api_route(f"/r{i}/{{code}}", answer)
    app.add_api_route("/warm/{code}", answer)
    paths = [f"/r{i}/{code}" for i in range(routes) for code in STATUSES][:n]
    loop = asyncio.new_event_loop()

    def get(path: str) -> tuple[int, bytes]:
        return loop.run_until_complete(_request(app, path))

    def scrape() -> int:
        status, body = get("/metrics")
        return samples(body.decode()) if status == 200 else 0

    for _ in range(20):
        get("/items/1")
    for code in STATUSES:
        get(f"/warm/{code}")

    def make() -> None:
        for path in paths:
            status, _ = get(path)
            if status != int(path.rsplit("/", 1)[1]):
                raise SystemExit(f"GET {path} -> {status}")

    return make, scrape


def user_case(target: str, n: int) -> tuple[Callable[[], None], Callable[[], int]]:
    library, instrument = target.split(".")
    values = [f"v{i}" for i in range(n)]  # made before the baseline: both libraries keep them
    if library == "otel":
        from fastapi import FastAPI
        from opentelemetry import metrics

        from otel_kit import setup_metrics

        handle = setup_metrics(FastAPI(), disabled_instrumentations=("runtime",))
        meter = metrics.get_meter("bench")
        if instrument == "counter":
            counter = meter.create_counter("bench.orders", unit="{order}")
            one: Callable[[str], None] = lambda v: counter.add(1, {"method": v})  # noqa: E731
        else:
            histogram = meter.create_histogram("bench.total", unit="s")
            one = lambda v: histogram.record(0.01, {"method": v})  # noqa: E731

        def scrape() -> int:
            return samples(handle.render().decode())
    else:
        import prometheus_client

        registry = prometheus_client.CollectorRegistry()
        if instrument == "counter":
            p_counter = prometheus_client.Counter("p_orders", "", ["method"], registry=registry)
            one = lambda v: p_counter.labels(v).inc()  # noqa: E731
        else:
            p_hist = prometheus_client.Histogram("p_total", "", ["method"], registry=registry)
            one = lambda v: p_hist.labels(v).observe(0.01)  # noqa: E731

        def scrape() -> int:
            return samples(prometheus_client.generate_latest(registry).decode())

    for _ in range(20):
        one("warm")

    def make() -> None:
        for value in values:
            one(value)

    return make, scrape


def child(case: Case, n: int, trace: bool) -> dict[str, Any]:
    make, scrape = (http_case if case.kind == "http" else user_case)(case.target, n)
    samples_before = scrape()
    scrape()
    if trace:
        tracemalloc.start(8)
    before = rss()
    snapshot = tracemalloc.take_snapshot() if trace else None
    make()
    samples_after = scrape()
    after = rss()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result: dict[str, Any] = {
        "rss_before": before,
        "rss_growth": after - before,
        "peak_over_before": peak - before,
        "samples_added": samples_after - samples_before,
    }
    if snapshot is not None:
        gc.collect()
        now = tracemalloc.take_snapshot()
        result["traced_growth"] = sum(s.size_diff for s in now.compare_to(snapshot, "filename"))
        result["top"] = [
            {
                "where": "/".join(Path(s.traceback[0].filename).parts[-2:])
                + f":{s.traceback[0].lineno}",
                "bytes": s.size_diff,
                "count": s.count_diff,
            }
            for s in now.compare_to(snapshot, "lineno")[:15]
        ]
    return result


# --- the parent -------------------------------------------------------------------------------


def run_child(case: Case, n: int, trace: bool, workdir: Path) -> dict[str, Any]:
    env = child_env(workdir) | {"OTEL_KIT_CARDINALITY_LIMIT": LIMIT}
    cmd = [sys.executable, __file__, "--child", case.name, "--sizes", str(n)]
    done = subprocess.run(
        cmd + (["--trace"] if trace else []), capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{case.name} at {n}: child failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    if case.kind == "http" and case.name != "bare" and result["samples_added"] < n:
        raise SystemExit(f"{case.name}: /metrics gained {result['samples_added']} samples for {n}")
    return result


def measure(
    cases: list[Case], sizes: list[int], repeats: int, trace: bool, workdir: Path
) -> dict[str, Any]:
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        c.name: {n: [] for n in sizes} for c in cases
    }
    for _ in range(repeats):  # interleaved, so a drifting machine hits every case alike
        for case in cases:
            for n in sizes:
                runs[case.name][n].append(run_child(case, n, False, workdir))
                growth = runs[case.name][n][-1]["rss_growth"]
                print(f"{case.name:28} {n:7,} {growth / n:10,.0f} B/series", file=sys.stderr)
    low, high = min(sizes), max(sizes)
    rows: dict[str, Any] = {}
    for case in cases:
        growth = {n: statistics.median(r["rss_growth"] for r in runs[case.name][n]) for n in sizes}
        added = runs[case.name][high][0]["samples_added"]
        rows[case.name] = {
            "kind": case.kind,
            "description": case.description,
            "rss_growth": {str(n): growth[n] for n in sizes},
            "rss_growth_runs": {
                str(n): [r["rss_growth"] for r in runs[case.name][n]] for n in sizes
            },
            "bytes_per_series": (growth[high] - growth[low]) / (high - low),
            "samples_per_series": added / high,
            "scrape_peak_per_series": statistics.median(
                r["peak_over_before"] for r in runs[case.name][high]
            )
            / high,
        }
    bare = rows.get("bare")
    for row in rows.values():
        if row["kind"] == "http" and bare is not None:
            row["bytes_per_series_net"] = row["bytes_per_series"] - bare["bytes_per_series"]
            if row["samples_per_series"]:
                row["bytes_per_sample"] = row["bytes_per_series_net"] / row["samples_per_series"]
    if trace:
        for case in cases:
            if case.name in TRACED:
                traced = run_child(case, high, True, workdir)
                rows[case.name]["traced_bytes_per_series"] = traced["traced_growth"] / high
                rows[case.name]["top_allocations"] = traced["top"]
    return rows


def render(result: dict[str, Any]) -> str:
    cfg, env, rows = result["config"], result["environment"], result["rows"]
    sizes = cfg["sizes"]
    high = max(sizes)
    commits = {row.get("git_commit", env["git_commit"]) for row in rows.values()}
    lines = [
        "# Memory per series (RSS), otel-kit against prometheus_client and peers",
        "",
        "Generated by `bench/memory.py`; see `bench/README.md`.",
        "",
        f"- Fresh process per measurement, {cfg['repeats']} per case and size (median), "
        f"sizes {', '.join(f'{n:,}' for n in sizes)}; bytes per series is the slope between "
        "the smallest and the largest size of the RSS growth (after gc and malloc_trim, one "
        "/metrics scrape included) while the series are made.",
        f"- HTTP: route/status pairs `/r<i>/{{code}}`, code in {', '.join(map(str, STATUSES))}, "
        "driven in-process through the app's ASGI callable; net = minus the bare app's slope "
        "(routes and requests alone). Per sample: net over the /metrics sample lines each "
        "route/status adds. RSS moves in 4 kB pages.",
        "- Scrape peak: the process's peak RSS (ru_maxrss) over the RSS before the series were "
        "made, per series at the largest size: mostly the one scrape's transient objects (a "
        "lower bound if startup peaked higher). Growth / N: the RSS growth at the largest size "
        "over its series, fixed costs included; RSS noise between processes is about ±1 MB, so "
        "the slope is ±500 B per series at these sizes; tracemalloc's bytes below are exact.",
        f"- {env['date']}, commit {', '.join(sorted(commits))}, Python {env['python']}.",
        "",
        f"| HTTP variant | bytes / route/status | net of bare | growth / N at {high:,} "
        "| samples / route/status | bytes / sample | scrape peak / route/status |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        if row["kind"] != "http":
            continue
        net = row.get("bytes_per_series_net")
        per_sample = row.get("bytes_per_sample")
        lines.append(
            f"| {name} | {row['bytes_per_series']:,.0f} "
            f"| {'-' if name == 'bare' or net is None else f'{net:,.0f}'} "
            f"| {row['rss_growth'][str(high)] / high:,.0f} "
            f"| {row['samples_per_series']:.1f} "
            f"| {'-' if per_sample is None else f'{per_sample:,.0f}'} "
            f"| {row['scrape_peak_per_series']:,.0f} |"
        )
    lines += [
        "",
        f"| user metric | bytes / series | growth / N at {high:,} | samples / series "
        "| scrape peak / series |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        if row["kind"] == "user":
            lines.append(
                f"| {name} | {row['bytes_per_series']:,.0f} "
                f"| {row['rss_growth'][str(high)] / high:,.0f} | {row['samples_per_series']:.1f} "
                f"| {row['scrape_peak_per_series']:,.0f} |"
            )
    traced = {k: r for k, r in rows.items() if "traced_bytes_per_series" in r}
    if traced:
        lines += ["", f"## tracemalloc, {max(sizes):,} series", ""]
        for name, row in traced.items():
            lines += [
                f"**{name}**: {row['traced_bytes_per_series']:,.0f} traced bytes per series. "
                "Top allocation sites (bytes and blocks per series):",
                "",
                "| where | bytes | blocks |",
                "|---|---:|---:|",
            ]
            lines += [
                f"| {t['where']} | {t['bytes'] / max(sizes):,.0f} | {t['count'] / max(sizes):.2f} |"
                for t in row["top_allocations"]
                if abs(t["bytes"]) >= max(sizes)  # a byte per series or more
            ]
            lines.append("")
    lines += ["", "Cases:", ""]
    lines += [f"- **{name}**: {row['description']}" for name, row in rows.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--cases", default=",".join(c.name for c in CASES))
    parser.add_argument("--sizes", default="1000,3000", help="series per measurement")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--trace", action="store_true", help="tracemalloc otel-kit's cases")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        print(json.dumps(child(BY_NAME[args.child], sizes[0], args.trace)))
        return 0
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = set(names) - set(BY_NAME)
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}; choose from {sorted(BY_NAME)}")
    if len(sizes) < 2:
        raise SystemExit("--sizes needs at least two sizes: bytes per series is the slope")
    http = any(BY_NAME[n].kind == "http" for n in names)  # then bare too: rows are net of it
    cases = [c for c in CASES if c.name in names or (http and c.name == "bare")]
    with tempfile.TemporaryDirectory(prefix="otel-kit-memory-") as tmp:
        snapshot_otel_kit(Path(tmp))
        rows = measure(cases, sizes, args.repeats, args.trace, Path(tmp))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "../otel_kit"],
        cwd=BENCH_DIR,
        capture_output=True,
        text=True,
    ).stdout.strip()
    config = {"sizes": sizes, "repeats": args.repeats, "statuses": list(STATUSES)}
    environment = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit + ("+dirty" if dirty else ""),
        "python": platform.python_version(),
    }
    for row in rows.values():
        row["git_commit"] = environment["git_commit"]
    # A run of some cases keeps the other cases' rows of an earlier run with the same config.
    try:
        earlier = json.loads((args.out / "memory.json").read_text())
    except (OSError, ValueError):
        earlier = {}
    if earlier.get("config") == config:
        for row in earlier["rows"].values():
            row.setdefault("git_commit", earlier["environment"]["git_commit"])
        kept = earlier["rows"] | rows
        rows = {c.name: kept[c.name] for c in CASES if c.name in kept}
    result = {"config": config, "environment": environment, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = render(result)
    (args.out / "memory.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
