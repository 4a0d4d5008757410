"""The README's performance section, rendered from bench/results/*.json.

    .venv/bin/python bench/readme.py            # print the section
    .venv/bin/python bench/readme.py --write    # replace it in README.md, between the markers
    .venv/bin/python bench/readme.py --check    # exit 1 if README.md's section is not current

The section is the text between `<!-- perf:start -->` and `<!-- perf:end -->` in README.md.
Each part reads one results file; a file that is absent or shaped differently gives that part
"not measured" instead of failing, so a benchmark being reworked never blocks the others.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
README = BENCH_DIR.parent / "README.md"
TIMES, DASH = "\u00d7", "\u2013"  # the README's; spelled out for ruff's RUF001
WIDTH = 100  # the README's line length
START, END = "<!-- perf:start -->", "<!-- perf:end -->"
FLAVOURS = {"plain": "plain uvicorn", "standard": "uvicorn[standard]"}
TRIVIAL = {  # results.json variant: README label, in README order
    "bare": "bare app",
    "otel-kit": "**otel-kit**",
    "handwritten": "hand-written prometheus_client ASGI middleware",
    "pfi": "prometheus-fastapi-instrumentator",
    "starlette-exporter": "starlette-exporter",
    "contrib": "contrib OTel FastAPI instrumentor + Prometheus reader",
}
WSGI = {
    "flask otel-kit": "Flask + **otel-kit**",
    "flask prometheus_flask_exporter": "Flask + prometheus_flask_exporter",
    "django otel-kit": "Django + **otel-kit**",
    "django django-prometheus": "Django + django-prometheus",
}
HOTPATH = {
    "urllib3 (and requests)": "urllib3/requests",
    "httpx": "httpx",
    "aiohttp": "aiohttp",
    "asyncpg Connection.fetchval": "asyncpg",
    "psycopg Cursor.execute": "psycopg",
}

Results = Callable[[str], Any]


def loader(results: Path) -> Results:
    """`load(name)`: the parsed results/<name>, None when absent or not JSON."""

    def load(name: str) -> Any:
        try:
            return json.loads((results / name).read_text())
        except (OSError, ValueError):
            return None

    return load


def num(value: float, digits: int = 0, sign: bool = False) -> str:
    return f"{value:{'+' if sign else ''},.{digits}f}"


def table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        raise ValueError("nothing measured")  # the part is "not measured", not an empty table
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def trivial(load: Results) -> list[str]:
    data = load("results.json")
    summary = data["summary"]
    flavours = [f for f in FLAVOURS if f in summary]
    by = {f: {r["variant"]: r for r in summary[f]} for f in flavours}
    header = ["variant"]
    for f in flavours:
        header += [f"{FLAVOURS[f]}: req/s", f"{TIMES} bare", "µs added"]
    rows = []
    for variant, label in TRIVIAL.items():
        if not any(variant in by[f] for f in flavours):
            continue
        row = [label]
        for f in flavours:
            r = by[f].get(variant)
            if r is None:
                row += ["-", "-", "-"]
                continue
            bold = "**" if variant == "otel-kit" else ""
            row += [
                num(r["rps_median"]),
                f"{bold}{r['ratio_to_bare']:.2f}{bold}",
                f"{bold}{num(r['us_added_per_request'], sign=variant != 'bare')}{bold}",
            ]
        rows.append(row)
    rounds = data["config"]["rounds"]
    cpu = [
        f"{num(by[f]['bare']['server_cpu_us_per_request'])} µs" for f in flavours if "bare" in by[f]
    ]
    return [
        "Measured in `bench/` (see `bench/README.md` and `bench/results/`), one uvicorn worker "
        "pinned to one core, wrk on the other, trivial route, variants interleaved:",
        "",
        *table(header, ["l"] + ["r"] * (len(header) - 1), rows),
        "",
        "`.venv/bin/python bench/http_overhead.py` reproduces it (medians of "
        f"{rounds} interleaved rounds; runs where the server got less than 95 % of its core are "
        "repeated). The bare app took " + " and ".join(cpu) + " of server CPU per request on "
        "this run's machine: µs scale with the machine, the ratios much less.",
    ]


def realistic(load: Results) -> list[str]:
    summary = load("realistic/results.json")["summary"]
    parts = []
    for f in FLAVOURS:
        row = next(r for r in summary.get(f, []) if r["variant"] == "otel-kit-db")
        parts.append((f, row["ratio_to_bare"], row["us_added_per_request"]))
    (f1, r1, u1), *rest = parts
    text = (
        "A realistic route (one SQLite query through SQLAlchemy and one cache lookup, HTTP + DB "
        f"+ cache metrics recorded) runs at {r1:.2f} of its bare baseline on {FLAVOURS[f1]} "
        f"({num(u1, sign=True)} µs per request)"
    )
    for f, ratio, added in rest:
        text += f" and {ratio:.2f} on {FLAVOURS[f]} ({num(added, sign=True)} µs)"
    return [
        text + "; see `bench/results/realistic/results.md`. Statements are timed on each "
        "engine's dialect rather than through SQLAlchemy's engine events, whose mere presence "
        "costs ~12 µs per connect-and-query on SQLAlchemy 2.1."
    ]


def instructions(load: Results) -> list[str]:
    data = load("instructions.json")
    per = {r["variant"]: r["per_request"] for r in data["instructions"]}
    wall = data.get("wall") or {}

    def k(a: str, b: str) -> str:
        return f"{(per[a] - per[b]) / 1000:.1f}k"

    text = (
        "Instruction counts do not depend on the machine's load (`bench/instructions.py`: "
        f"{data['config']['requests']:,} in-process ASGI requests under callgrind, bare against "
        f"instrumented): otel-kit adds {k('otel-kit', 'bare')} instructions per request on the "
        "trivial route"
    )
    if "otel-kit" in wall:
        w = wall["otel-kit"]
        text += (
            f" ({num(w['cpu_added'], 1, True)} µs CPU measured natively in "
            f"{data['config']['wall_rounds']} interleaved rounds, IQR "
            f"{w['cpu_added_q1']:.1f}{DASH}{w['cpu_added_q3']:.1f})"
        )
    if "otel-kit-db" in per and "bare-db" in per:
        text += f" and {k('otel-kit-db', 'bare-db')} on the realistic one"
        if {"otel-kit-db-no-sqlalchemy", "otel-kit-db-http-only"} <= per.keys():
            text += (
                f" (HTTP {k('otel-kit-db-http-only', 'bare-db')}, SQLAlchemy "
                f"{k('otel-kit-db', 'otel-kit-db-no-sqlalchemy')}, cache lookup "
                f"{k('otel-kit-db-no-sqlalchemy', 'otel-kit-db-http-only')}"
            )
            if "otel-kit-db" in wall:
                text += f"; {num(wall['otel-kit-db']['cpu_added'], 0, True)} µs natively"
            text += ")"
    return [text + "; see `bench/results/instructions.md`."]


def hotpath(load: Results) -> list[str]:
    data = load("hotpath.json")
    calls = data["outbound_us_bare_instrumented"] | data["db_statement_us_bare_instrumented"]
    parts = [
        f"{label} {num(calls[key][1] - calls[key][0], 1, True)}"
        for key, label in HOTPATH.items()
        if key in calls
    ]
    return [
        "Each integration's cost per call against the bare call is in "
        f"`bench/results/hotpath.md` (µs per call or statement: {', '.join(parts)})."
    ]


def wsgi(load: Results) -> list[str]:
    rows = {r["variant"]: r for r in load("wsgi.json")["rows"]}
    body = [
        [label, f"{r['rps_ratio_quartiles'][1]:.2f}", num(r["added_cpu_us_quartiles"][1], 0, True)]
        for key, label in WSGI.items()
        if (r := rows.get(key)) is not None
    ]
    for row in body:
        if "otel-kit" in row[0]:
            row[1:] = [f"**{cell}**" for cell in row[1:]]
    return [
        "Flask and Django against bare and against prometheus_flask_exporter and "
        "django-prometheus (`bench/wsgi_overhead.py`: one gunicorn sync worker pinned, "
        "interleaved rounds, medians of per-round pair differences; `bench/results/wsgi.md`):",
        "",
        *table(
            ["variant", f"{TIMES} bare req/s", "server CPU µs added per request"],
            ["l", "r", "r"],
            body,
        ),
    ]


def generic_rows(rows: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    """A table of `rows` (dicts), columns in first-seen key order, numbers formatted."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and not isinstance(row[k], (dict, list))]

    def digits(key: str) -> int:  # one format per column: 2 decimals unless it is large
        values = [row.get(key) for row in rows]
        floats = [v for v in values if isinstance(v, float)]
        return 2 if floats and max(abs(v) for v in floats) < 1000 else 0

    def cell(value: Any, places: int) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "-" if value is None else str(value)
        return num(value, places if isinstance(value, float) else 0)

    first = rows[0]
    align = ["r" if isinstance(first.get(k), (int, float)) else "l" for k in keys]
    return table(
        [labels.get(k, k.replace("_", " ")) for k in keys],
        align,
        [[cell(row.get(k), digits(k)) for k in keys] for row in rows],
    )


def servers(load: Results) -> list[str]:
    """servers.json: bench/http_overhead.py's summary with one entry per server."""
    summary = load("servers.json")["summary"]
    by = {server: {r["variant"]: r for r in rows} for server, rows in summary.items()}
    variants = [v for v in TRIVIAL if v != "bare" and any(v in rows for rows in by.values())]
    body = []
    for server, rows in by.items():
        row = [FLAVOURS.get(server, server), num(rows["bare"]["rps_median"])]
        for v in variants:
            r = rows.get(v)
            row.append(
                "-"
                if r is None
                else f"{r['ratio_to_bare']:.2f} ({num(r['us_added_per_request'], sign=True)} µs)"
            )
        body.append(row)
    return [
        "The trivial route under other servers, one worker each (`bench/http_overhead.py --name "
        f"servers`; `bench/results/servers.md`), throughput {TIMES} bare (µs added per request):",
        "",
        *table(
            ["server", "bare req/s", *variants],
            ["l"] + ["r"] * (len(variants) + 1),
            body,
        ),
    ]


def user_metrics(load: Results) -> list[str]:
    data = load("user_metrics.json")
    calls, series = data["us_per_call"], data["bytes_per_series"]
    counted = data.get("instructions_per_call") or {}
    rss = data.get("rss_per_1000_series") or {}

    def us(value: Any) -> str:  # a median with its IQR, or (older files) one number
        if isinstance(value, dict):
            return f"{value['median']:.2f} (IQR {value['iqr']:.2f})"
        return f"{value:.2f}"

    call_header, call_align = ["measurement", "µs per call"], ["l", "r"]
    call_rows = [[k, us(v)] for k, v in calls.items() if k != "empty"]
    if counted:
        call_header.insert(1, "instructions per call")
        call_align.append("r")
        for row in call_rows:
            row.insert(1, num(counted[row[0]]) if row[0] in counted else "-")
    series_header, series_align = ["memory", "bytes per series (tracemalloc)"], ["l", "r"]
    series_rows = [[k, num(v)] for k, v in series.items()]
    if rss:
        series_header.append("RSS per 1,000 series")
        series_align.append("r")
        for row in series_rows:
            row.append(f"{num(rss[row[0]] / 1024)} kB" if row[0] in rss else "-")
    return [
        "User metrics created through the OTel API after `setup_metrics()`, against "
        "prometheus_client (`bench/user_metrics.py`; `bench/results/user_metrics.md`):",
        "",
        *table(call_header, call_align, call_rows),
        "",
        *table(series_header, series_align, series_rows),
    ]


def memory(load: Results) -> list[str]:
    rows = load("memory.json")["rows"]
    labels = TRIVIAL | {
        "otel counter": "OTel API counter after `setup_metrics()`",
        "otel histogram": "OTel API histogram after `setup_metrics()`",
    }

    def traced(row: dict[str, Any]) -> str:
        value = row.get("traced_bytes_per_series")
        return "-" if value is None else num(value)

    http = [
        [
            labels.get(name, name),
            num(r["bytes_per_series_net"]),
            f"{r['samples_per_series']:.0f}",
            num(r["bytes_per_sample"]),
            traced(r),
        ]
        for name, r in rows.items()
        if r["kind"] == "http" and "bytes_per_series_net" in r and name != "bare"
    ]
    user = [
        [labels.get(name, name), num(r["bytes_per_series"]), traced(r)]
        for name, r in rows.items()
        if r["kind"] == "user"
    ]
    return [
        "Memory per series (`bench/memory.py`; `bench/results/memory.md`): RSS growth in fresh "
        "processes, the slope between two sizes (±500 B: RSS varies by about 1 MB between "
        "processes), and the Python heap that tracemalloc traces (exact), per route"
        f"{TIMES}status pair of the HTTP metrics, net of the bare app's own routes:",
        "",
        *table(
            [
                "HTTP metrics",
                f"RSS per route{TIMES}status",
                "samples each",
                "RSS per sample",
                "traced",
            ],
            ["l", "r", "r", "r", "r"],
            http,
        ),
        "",
        "and per user-metric series:",
        "",
        *table(["user metric", "RSS per series", "traced"], ["l", "r", "r"], user),
    ]


def multiworker(load: Results) -> list[str]:
    data = load("multiworker.json")
    rows = data["rows"]
    return [
        "Scrape cost with several workers (`bench/multiworker.py`; "
        "`bench/results/multiworker.md`):",
        "",
        *generic_rows(
            rows,
            {
                "p50_ms": "scrape p50 ms",
                "p50_x_single": f"{TIMES} single",
                "cpu_ms_per_scrape": "CPU ms per scrape (all processes)",
                "cpu_x_single": f"{TIMES} single",
                "bytes": "bytes",
            },
        ),
    ]


def scrape(load: Results) -> list[str]:
    rows = sorted(load("scrape.json"), key=lambda r: r["series"])
    parts = [
        f"{r['series']:,} series {r['otel_kit_render_ms']:.1f} ms against prometheus_client's "
        f"{r['prometheus_client_render_ms']:.1f} ms ({r['render_ratio']:.2f}{TIMES})"
        for r in rows
    ]
    return [f"Rendering /metrics (`bench/scrape.py`): {'; '.join(parts)}."]


def bounded(load: Results) -> list[str]:
    text = (
        "Bounded under attack and over time (both run by the test suite): 112,500 requests "
        "with random paths, unknown methods, query strings and headers leave the HTTP metric at "
        "5 series and the server's RSS within +0.4 MB; an app metric labelled by request input "
        "stops at `cardinality_limit` and counts the rest in the overflow series."
    )
    try:
        soak = load("soak.json")
        verdict = soak["verdict"]
        samples = sorted(set(verdict["samples_after_warmup"]))
        text += (
            f" `bench/soak.py` sends {soak['config']['requests']:,} requests through the example "
            f"shop (SQLite, cache, outbound call): {'/'.join(map(str, samples))} samples on "
            "/metrics from the first chunk to the last, RSS "
            f"{verdict['rss_growth_after_warmup_bytes'] / 2**20:+.1f} MB after warm-up, which is "
            "the shop's own growth (+1.8 to +2.1 MB with otel-kit's instrumentations off); see "
            "`bench/results/soak.md`."
        )
    except (KeyError, TypeError, ValueError):
        text += " Soak (`bench/soak.py`): not measured."
    return [text]


PARTS: tuple[tuple[str, Callable[[Results], list[str]]], ...] = (
    ("HTTP overhead, trivial route (results.json)", trivial),
    ("realistic route (realistic/results.json)", realistic),
    ("instruction counts (instructions.json)", instructions),
    ("integrations' hot paths (hotpath.json)", hotpath),
    ("WSGI overhead (wsgi.json)", wsgi),
    ("other servers (servers.json)", servers),
    ("user metrics (user_metrics.json)", user_metrics),
    ("memory per series (memory.json)", memory),
    ("scrape cost with several workers (multiworker.json)", multiworker),
    ("/metrics render (scrape.json)", scrape),
    ("bounds and soak (soak.json)", bounded),
)


def section(results: Path = RESULTS) -> str:
    """The section's text (without the markers), each part or its "not measured" line."""
    load = loader(results)
    blocks = []
    for title, part in PARTS:
        try:
            lines = part(load)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, StopIteration):
            lines = [f"{title[0].upper()}{title[1:]}: not measured."]
        blocks.append("\n".join(line if line.startswith("|") else wrap(line) for line in lines))
    return "\n\n".join(blocks) + "\n"


def wrap(paragraph: str) -> str:
    return textwrap.fill(paragraph, WIDTH, break_long_words=False, break_on_hyphens=False)


def replaced(readme: str, text: str) -> str:
    """`readme` with the text between the markers replaced by `text`."""
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"README.md needs the markers {START} and {END} around the section")
    return f"{head}{START}\n{text}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=README)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the section in the README")
    mode.add_argument("--check", action="store_true", help="exit 1 if the section is stale")
    args = parser.parse_args(argv)
    text = section(args.results)
    if not (args.write or args.check):
        sys.stdout.write(text)
        return 0
    current = args.readme.read_text()
    new = replaced(current, text)
    if args.check:
        if new != current:
            print(f"{args.readme}: the performance section is stale; run {__file__} --write")
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
