"""The shipped Collector configs, run by the real Collector (collector/build/manifest.yaml) with
the shop pushing OTLP through them into a real Prometheus 3: exact counts at the far end for
the gateway (across a restart), the remote-write overlay, the agent in front of a gateway, the
bearer-token overlay, and a stream that moves between gateways (the frozen-copy case)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

import otel_kit
from otel_kit.generate import rules
from tests import go_tools
from tests.integration.otelcol import (
    COLLECTOR,
    Ports,
    collector,
    shipped_prometheus_config,
    validate,
)
from tests.integration.processes import free_port, server
from tests.integration.prometheus_server import prometheus, query, wait_for

pytestmark = pytest.mark.integration

GATEWAY = COLLECTOR / "otelcol-config.yaml"
AGENT = COLLECTOR / "otelcol-agent.yaml"
REMOTE_WRITE = COLLECTOR / "otelcol-remote-write.yaml"
AUTH = COLLECTOR / "otelcol-auth.yaml"
COUNT = 'http_server_request_duration_seconds_count{job="shop", http_route="/users/{user_id}"}'


def k8s_files(directory: Path) -> dict[str, Path]:
    """The files of collector/k8s' ConfigMaps (name: path), written out."""
    found = {}
    for name in ("gateway.yaml", "agent.yaml"):
        for doc in yaml.safe_load_all((COLLECTOR / "k8s" / name).read_text()):
            if doc and doc["kind"] == "ConfigMap":
                for file, text in doc["data"].items():
                    (directory / file).write_text(text)
                    found[file] = directory / file
    return found


def test_every_shipped_config_validates(tmp_path: Path) -> None:
    """`otelcol validate` on each file and overlay as the docs combine them, and on the k8s
    ConfigMaps' configs; the agent's old int DNS port is what the Collector refuses."""
    agent_env = {"GATEWAY_HOSTNAME": "otel-gateway-headless"}
    remote_write = {"REMOTE_WRITE_URL": "http://127.0.0.1:9/api/v1/write"}
    k8s = k8s_files(tmp_path)
    assert sorted(k8s) == ["otelcol-agent.yaml", "otelcol-config.yaml", "otelcol-remote-write.yaml"]
    cases = [
        ([GATEWAY], {}),
        ([GATEWAY, REMOTE_WRITE], remote_write),
        ([GATEWAY, AUTH], {"OTLP_TOKEN": "secret"}),
        ([AGENT], agent_env),
        ([AGENT, AUTH], {**agent_env, "OTLP_TOKEN": "secret"}),
        ([k8s["otelcol-config.yaml"]], {}),
        ([k8s["otelcol-config.yaml"], k8s["otelcol-remote-write.yaml"]], remote_write),
        ([k8s["otelcol-agent.yaml"]], agent_env),
    ]
    for configs, env in cases:
        validate(configs, env)
    with pytest.raises(AssertionError, match="'port' expected type 'string'"):
        validate([AGENT], agent_env, ["--set=exporters::loadbalancing::resolver::dns::port=4317"])


@contextmanager
def shop(directory: Path, otlp: str, **env: str) -> Iterator[httpx.Client]:
    """The example shop pushing every second to `otlp` (an OTLP/HTTP base URL)."""
    port = free_port()
    environment = {
        "SHOP_DATABASE_URL": f"sqlite:///{directory / 'shop.db'}",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        **env,
    }
    args = ["-m", "uvicorn", "examples.shop.app:app", "--port", str(port), "--log-level", "error"]
    with (
        server(args, port, environment, "/healthz") as base,
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        yield client


def requests(client: httpx.Client, count: int) -> None:
    for _ in range(count):
        assert client.get("/users/1").status_code == 200


def directory(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def prometheus3(path: Path, config: str, *args: str) -> Iterator[str]:
    with prometheus(config, directory(path), go_tools.prometheus3(), args) as base:
        yield base


def test_gateway_exact_counts_across_a_restart(tmp_path: Path) -> None:
    ports = Ports.free()
    config = shipped_prometheus_config(collectors=[f"127.0.0.1:{ports.metrics}"])
    with (
        prometheus3(tmp_path / "prom", config) as prom,
        shop(tmp_path, f"http://127.0.0.1:{ports.http}") as client,
    ):
        with collector([GATEWAY], tmp_path / "gw", ports=ports):
            requests(client, 30)
            (series,) = wait_for(prom, f"{COUNT} == 30", timeout=60)
            # the labels of direct mode: job and instance from the resource, the scope labels
            assert series["metric"]["otel_scope_name"] == "otel_kit"
            assert series["metric"]["otel_scope_version"] == otel_kit.__version__
            (info,) = query(prom, 'target_info{job="shop"}')
            assert info["metric"]["service_name"] == "shop"
            assert info["metric"]["service_instance_id"] == series["metric"]["instance"]
        requests(client, 20)  # while the Collector is down: counted by the shop, sent later
        with collector([GATEWAY], tmp_path / "gw", ports=ports):
            requests(client, 10)
            wait_for(prom, f"{COUNT} == 60", timeout=60)
            assert query(prom, f"resets({COUNT}[5m])")[0]["value"][1] == "0"
            assert len(query(prom, f"{COUNT}[5m]")) == 1  # one series throughout


def test_remote_write_overlay_into_prometheus(tmp_path: Path) -> None:
    receiver = ("--web.enable-remote-write-receiver",)
    with prometheus3(tmp_path / "prom", shipped_prometheus_config(), *receiver) as prom:
        env = {"REMOTE_WRITE_URL": f"{prom}/api/v1/write"}
        with (
            collector([GATEWAY, REMOTE_WRITE], tmp_path / "gw", env=env) as ports,
            shop(tmp_path, f"http://127.0.0.1:{ports.http}") as client,
        ):
            requests(client, 25)
            wait_for(prom, f"{COUNT} == 25", timeout=60)
            (info,) = query(prom, 'target_info{job="shop"}')
            assert info["metric"]["service_name"] == "shop"


def test_agent_forwards_to_the_gateway(tmp_path: Path) -> None:
    """The agent in front of a gateway, both from the Kubernetes ConfigMaps (the same files as
    collector/, which the other tests run): the agent's DNS resolver on 127.0.0.1 and the
    gateway's gRPC port."""
    k8s = k8s_files(tmp_path)
    gateway = Ports.free()
    port = f'--set=exporters::loadbalancing::resolver::dns::port="{gateway.grpc}"'
    config = shipped_prometheus_config(collectors=[f"127.0.0.1:{gateway.metrics}"])
    with (
        collector([k8s["otelcol-config.yaml"]], tmp_path / "gw", ports=gateway),
        collector(
            [k8s["otelcol-agent.yaml"]],
            tmp_path / "agent",
            env={"GATEWAY_HOSTNAME": "127.0.0.1"},
            gateway=False,
            extra=[port],
        ) as agent,
        prometheus3(tmp_path / "prom", config) as prom,
        shop(tmp_path, f"http://127.0.0.1:{agent.http}") as client,
    ):
        requests(client, 40)
        wait_for(prom, f"{COUNT} == 40", timeout=60)


def test_bearer_token_overlay(tmp_path: Path) -> None:
    token = "s3cret-token"
    with collector([GATEWAY, AUTH], tmp_path / "gw", env={"OTLP_TOKEN": token}) as ports:
        config = shipped_prometheus_config(collectors=[f"127.0.0.1:{ports.metrics}"])
        url = f"http://127.0.0.1:{ports.http}"
        protobuf = {"Content-Type": "application/x-protobuf"}
        assert httpx.post(f"{url}/v1/metrics", headers=protobuf).status_code == 401
        wrong = {**protobuf, "Authorization": "Bearer other"}
        assert httpx.post(f"{url}/v1/metrics", headers=wrong).status_code == 401
        with (
            prometheus3(tmp_path / "prom", config) as prom,
            shop(tmp_path, url, OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer {token}") as c,
        ):
            requests(c, 15)
            wait_for(prom, f"{COUNT} == 15", timeout=60)


def static_resolver(*gateways: Ports) -> list[str]:
    """The agent's resolver as a fixed list (the k8s DNS resolver's answers, changed by hand)."""
    hosts = ", ".join(f'"127.0.0.1:{g.grpc}"' for g in gateways)
    return [
        "--set=exporters::loadbalancing::resolver::dns=null",
        f"--set=exporters::loadbalancing::resolver::static={{hostnames: [{hosts}]}}",
    ]


class Load:
    """GET /users/1 at a steady pace from a thread until stopped; counts what it sent."""

    def __init__(self, client: httpx.Client, per_second: float) -> None:
        self.sent = 0
        self.failures: list[str] = []  # the thread's, checked by the test once it has stopped
        self._client, self._pause = client, 1 / per_second
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.wait(self._pause):
            try:
                status = self._client.get("/users/1").status_code
            except httpx.HTTPError as exc:
                status = repr(exc)
            if status != 200:
                self.failures.append(str(status))
                return
            self.sent += 1

    def __enter__(self) -> Load:
        self.started = time.time()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.stopped = time.time()

    def running(self) -> bool:
        return self._thread.is_alive()


@pytest.mark.parametrize("send_timestamps", [True, False], ids=["shipped", "no-timestamps"])
def test_a_stream_moving_between_gateways_stays_one_correct_series(
    tmp_path: Path, send_timestamps: bool
) -> None:
    """Gateways [A] -> [A, B] -> [B] while the shop takes steady traffic; Prometheus scrapes
    both with the shipped job (honor_labels). A keeps a frozen copy of the shop's series after
    the move. Shipped (samples carry the app's timestamps): Prometheus drops that copy, and the
    series has no reset and the real rate. Without timestamps, both copies mix into one series:
    resets, and rates far above the traffic."""
    a, b = Ports.free(), Ports.free()
    config = shipped_prometheus_config(collectors=[f"127.0.0.1:{g.metrics}" for g in (a, b)])
    extra = [] if send_timestamps else ["--set=exporters::prometheus::send_timestamps=false"]
    agent_ports = Ports.free()
    with ExitStack() as stack:
        stack.enter_context(collector([GATEWAY], tmp_path / "a", ports=a, extra=extra))
        stack.enter_context(collector([GATEWAY], tmp_path / "b", ports=b, extra=extra))
        prom = stack.enter_context(prometheus3(tmp_path / "prom", config))
        client = stack.enter_context(shop(tmp_path, f"http://127.0.0.1:{agent_ports.http}"))
        env = {"GATEWAY_HOSTNAME": "unused"}
        agent = stack.enter_context(ExitStack())
        with Load(client, per_second=20) as load:
            for stage in ((a,), (a, b), (b,)):
                agent.close()  # the agent restarts with the new gateway list
                agent.enter_context(
                    collector(
                        [AGENT],
                        tmp_path / "agent",
                        env=env,
                        ports=agent_ports,
                        gateway=False,
                        extra=static_resolver(*stage),
                    )
                )
                time.sleep(8)  # the traffic of this stage (a duration, not a wait)
        assert load.failures == [] and not load.running()
        window = f"{int(time.time() - load.started) + 5}s"
        if send_timestamps:
            wait_for(prom, f"{COUNT} == {load.sent}", timeout=60)
        else:
            wait_for(prom, COUNT, timeout=60)
        resets = float(query(prom, f"resets({COUNT}[{window}])")[0]["value"][1])
        peak = max_rate(prom, load.started, load.stopped)
        rate = load.sent / (load.stopped - load.started)
        print(
            f"send_timestamps={send_timestamps}: {load.sent} requests at {rate:.1f}/s; "
            f"resets {resets:g}, peak rate()[5s] {peak:.1f}/s"
        )
        if send_timestamps:
            assert resets == 0
            assert peak < 2 * rate
        else:
            assert resets > 0
            assert peak > 3 * rate


def max_rate(prom: str, start: float, end: float) -> float:
    params = {
        "query": f"rate({COUNT}[5s])",
        "start": str(start + 5),
        "end": str(end),
        "step": "1",
    }
    body = httpx.get(f"{prom}/api/v1/query_range", params=params, timeout=10).json()
    assert body["status"] == "success", body
    return max(float(v) for series in body["data"]["result"] for _, v in series["values"])


def test_a_failing_export_trips_the_collector_alerts_condition(tmp_path: Path) -> None:
    """Remote write to a closed port: the Collector's failure counter, scraped by the shipped
    otel-collector-internal job, makes OtelKitCollectorExportFailing's condition true."""
    groups = rules.alerts(rules.SLO(), rules.Thresholds())
    (alert,) = [a for g in groups for a in g.rules if a.name == "OtelKitCollectorExportFailing"]
    assert isinstance(alert, rules.Alert)
    ports = Ports.free()
    env = {"REMOTE_WRITE_URL": f"http://127.0.0.1:{free_port()}/api/v1/write"}
    retry = "--set=exporters::prometheusremotewrite::retry_on_failure"
    give_up = f"{retry}={{max_elapsed_time: 1s, max_interval: 1s, initial_interval: 100ms}}"
    config = shipped_prometheus_config(telemetry=[f"127.0.0.1:{ports.telemetry}"])
    with (
        collector([GATEWAY, REMOTE_WRITE], tmp_path / "gw", env=env, ports=ports, extra=[give_up]),
        prometheus3(tmp_path / "prom", config) as prom,
        shop(tmp_path, f"http://127.0.0.1:{ports.http}") as client,
    ):
        requests(client, 5)
        (failing,) = wait_for(prom, alert.expr, timeout=60)
        assert failing["metric"] == {
            "job": "otel-collector-internal",
            "instance": f"127.0.0.1:{ports.telemetry}",
            "exporter": "prometheusremotewrite",
        }
        # the prometheus exporter beside it is fine: its points are sent
        sent = query(prom, 'otelcol_exporter_sent_metric_points_total{exporter="prometheus"}')
        assert float(sent[0]["value"][1]) > 0


def test_a_restarted_app_is_counted_once_after_the_expiry(tmp_path: Path) -> None:
    """The shop restarts (a new instance id): for up to the shipped metric_expiration (1 min)
    the Collector still shows the old instance, then Prometheus marks its series stale, and
    sums of gauges count the live process only."""
    ports = Ports.free()
    config = shipped_prometheus_config(collectors=[f"127.0.0.1:{ports.metrics}"])
    instances = 'count(target_info{job="shop"})'
    gauges = 'count(http_server_active_requests{job="shop"})'
    with (
        collector([GATEWAY], tmp_path / "gw", ports=ports),
        prometheus3(tmp_path / "prom", config) as prom,
    ):
        otlp = f"http://127.0.0.1:{ports.http}"
        with shop(directory(tmp_path / "first"), otlp) as client:
            requests(client, 3)
            wait_for(prom, f"{COUNT} == 3", timeout=60)
        with shop(directory(tmp_path / "second"), otlp) as client:
            requests(client, 2)
            wait_for(prom, f"{instances} == 2 and {gauges} == 2", timeout=60)
            restarted = time.monotonic()
            wait_for(prom, f"{instances} == 1 and {gauges} == 1", timeout=120)
            print(f"the old instance left the sums {time.monotonic() - restarted:.0f} s later")
            (live,) = query(prom, COUNT)
            assert live["value"][1] == "2"  # the new process's own count
