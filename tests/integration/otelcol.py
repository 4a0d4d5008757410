"""The real OpenTelemetry Collector (collector/build/manifest.yaml, built by .ci/build-otelcol)
and Prometheus 3 (.ci/build-prometheus) for the tests, on loopback, stopped by PID.

The Collector runs the shipped files unchanged; only what must differ on a test machine is set
on the command line (`--set`): every listen address becomes 127.0.0.1 and a free port."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests import go_tools
from tests.integration.processes import ROOT, free_port, terminate, wait_until_ready

COLLECTOR = ROOT / "collector"


@dataclass(frozen=True)
class Ports:
    grpc: int
    http: int
    metrics: int  # the prometheus exporter (gateway only)
    telemetry: int
    health: int

    @classmethod
    def free(cls) -> Ports:
        return cls(*(free_port() for _ in range(5)))

    def overrides(self, config: Path, gateway: bool) -> list[str]:
        """--set options: `config`'s listen addresses on 127.0.0.1 and these ports (its
        telemetry reader as shipped but for host and port: a list is replaced whole)."""
        (reader,) = yaml.safe_load(config.read_text())["service"]["telemetry"]["metrics"]["readers"]
        reader["pull"]["exporter"]["prometheus"] |= {"host": "127.0.0.1", "port": self.telemetry}
        sets = [
            f"receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{self.grpc}",
            f"receivers::otlp::protocols::http::endpoint=127.0.0.1:{self.http}",
            f"extensions::health_check::endpoint=127.0.0.1:{self.health}",
            f"service::telemetry::metrics::readers={json.dumps([reader])}",
        ]
        if gateway:
            sets.append(f"exporters::prometheus::endpoint=127.0.0.1:{self.metrics}")
        return [f"--set={s}" for s in sets]


def config_args(configs: Sequence[Path], extra: Sequence[str] = ()) -> list[str]:
    return [*(f"--config={c}" for c in configs), *extra]


def validate(configs: Sequence[Path], env: dict[str, str], extra: Sequence[str] = ()) -> None:
    """`otelcol validate`: every component known and its configuration accepted."""
    done = subprocess.run(
        [go_tools.otelcol(), "validate", *config_args(configs, extra)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@contextmanager
def collector(
    configs: Sequence[Path],
    directory: Path,
    *,
    env: dict[str, str] | None = None,
    ports: Ports | None = None,
    gateway: bool = True,
    extra: Sequence[str] = (),
) -> Iterator[Ports]:
    """Validate, then run the Collector with `configs` until it is healthy; stop it by PID."""
    ports = ports or Ports.free()
    overrides = [*ports.overrides(configs[0], gateway), *extra]
    args = config_args(configs, overrides)
    environment = {**os.environ, **(env or {})}
    validate(configs, environment, overrides)
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "otelcol.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [go_tools.otelcol(), *args], env=environment, stdout=out, stderr=out
        )
    try:
        wait_until_ready(process, f"http://127.0.0.1:{ports.health}/", log, "the Collector")
        yield ports
    finally:
        terminate(process)


def shipped_prometheus_config(
    rule_files: Sequence[Path] = (),
    *,
    collectors: Sequence[str] = (),
    telemetry: Sequence[str] = (),
    direct: dict[str, str] | None = None,
) -> str:
    """collector/prometheus.yml as shipped, with these targets, 1 s intervals and absolute rule
    paths: each job keeps its settings (honor_labels, track_timestamps_staleness, relabeling).
    `collectors`: the gateways' exporters; `telemetry`: the Collectors' own metrics; `direct`:
    job name -> target of apps that serve /metrics. A job without targets is left out."""
    config = yaml.safe_load((COLLECTOR / "prometheus.yml").read_text())
    config["global"] = {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    config["rule_files"] = [str(p) for p in rule_files]
    shipped = {job["job_name"]: job for job in config["scrape_configs"]}
    template = next(job for name, job in shipped.items() if not name.startswith("otel-collector"))
    jobs = [
        {**shipped[name], "static_configs": [{"targets": list(targets)}]}
        for name, targets in (
            ("otel-collector", collectors),
            ("otel-collector-internal", telemetry),
        )
        if targets
    ]
    for name, target in (direct or {}).items():
        jobs.append({**template, "job_name": name, "static_configs": [{"targets": [target]}]})
    config["scrape_configs"] = jobs
    return yaml.safe_dump(config, sort_keys=False)
