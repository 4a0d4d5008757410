"""What the runtime metrics (`otel_kit/_instrumentation/runtime.py`) cost each collection.

    .venv/bin/python bench/runtime_metrics.py [--rounds 31] [--reads 200] [--out FILE.json]

Two setups in one process, `MetricsHandle.create(FastAPI())` with every integration on and the
same with `disabled_instrumentations="runtime"`; what is measured is one `read()` of the
Prometheus reader (what every scrape, push and multi-process snapshot runs), the difference
between the two setups is the runtime metrics' cost.

- Instructions per collection (callgrind, what the neighbours do not move): one process under
  `valgrind --tool=callgrind`; per setup a warm-up, zero the counters, `CALLGRIND_READS`
  reads, dump; over the reads.
- µs per collection (wall clock): `--rounds` interleaved rounds of `--reads` reads of each
  setup; median of the per-round differences and its IQR.

`--otel-kit DIR` measures the otel_kit package in DIR (e.g. a copy of an older version).
Prints the result as JSON (and writes it to `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CALLGRIND_READS = 200
WARMUP = 20
SETUPS = ("runtime-off", "runtime-on")


def readers() -> dict[str, Any]:
    """The Prometheus reader of each setup, warmed up."""
    from fastapi import FastAPI

    from otel_kit._exporters.prometheus import PullReader
    from otel_kit._setup import MetricsHandle

    made = {}
    for name in SETUPS:
        disabled = "runtime" if name == "runtime-off" else ""
        handle = MetricsHandle.create(FastAPI(), disabled_instrumentations=disabled)
        reader = next(r for r in handle.meter_provider._metric_readers if isinstance(r, PullReader))
        for _ in range(WARMUP):
            reader.read()
        made[name] = reader
    return made


def series_count(reader: Any) -> int:
    data = reader.read()
    return sum(
        len(metric.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )


def child(reads: int) -> None:
    """Inside callgrind: per setup, zero the counters, `reads` reads, dump."""
    pid = str(os.getpid())
    for name, reader in readers().items():
        subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
        for _ in range(reads):
            reader.read()
        dump = ["callgrind_control", "-d", f"setup {name}", pid]
        subprocess.run(dump, check=True, capture_output=True)


def instructions(otel_kit_dir: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if otel_kit_dir:
            env["PYTHONPATH"] = otel_kit_dir
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/cg.%p",
            sys.executable,
            __file__,
            "--child",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"callgrind run failed:\n{done.stderr[-4000:]}")
        per_read = {}
        for dump in Path(tmp).glob("cg.*"):
            text = dump.read_text(errors="replace")
            trigger = re.search(r"Trigger: .*setup (\S+)$", text, re.M)
            summary = re.search(r"^summary: (\d+)", text, re.M)
            if trigger and summary:
                per_read[trigger[1].strip()] = int(summary[1]) / CALLGRIND_READS
    if set(per_read) != set(SETUPS):
        raise SystemExit(f"expected one dump per setup, got {sorted(per_read)}")
    return per_read


def wall(rounds: int, reads: int) -> dict[str, Any]:
    made = readers()
    per_round: dict[str, list[float]] = {name: [] for name in SETUPS}
    for _ in range(rounds):
        for name, reader in made.items():
            start = time.perf_counter()
            for _ in range(reads):
                reader.read()
            per_round[name].append((time.perf_counter() - start) / reads * 1e6)
    added = [
        on - off for on, off in zip(per_round["runtime-on"], per_round["runtime-off"], strict=True)
    ]
    quartiles = statistics.quantiles(added, n=4)
    return {
        "us_per_read": {name: statistics.median(v) for name, v in per_round.items()},
        "added_us_median": statistics.median(added),
        "added_us_iqr": quartiles[2] - quartiles[0],
        "series": {name: series_count(reader) for name, reader in made.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--otel-kit", help="directory holding the otel_kit package to measure")
    parser.add_argument("--out", type=Path, help="write the result there too (JSON)")
    args = parser.parse_args()
    if args.child:
        child(CALLGRIND_READS)
        return
    if args.otel_kit:  # the wall-clock part runs in this process
        sys.path.insert(0, args.otel_kit)
    counted = instructions(args.otel_kit)
    timed = wall(args.rounds, args.reads)
    result = {
        "instructions_per_read": counted,
        "added_instructions_per_read": counted["runtime-on"] - counted["runtime-off"],
        **timed,
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
        "reads": args.reads,
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
