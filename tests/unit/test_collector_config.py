"""The shipped Collector, Prometheus, Grafana, compose and Kubernetes files, and
`otel-kit collector-config`.

The real Collector validates and runs the configs in tests/integration/test_collector.py; here:
the manifest it is built from has exactly the components they use, pipelines use every
component they define, ports agree with the app's defaults and between the files. Prometheus
3's `promtool check config` runs on the Prometheus configs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from typer.testing import CliRunner

from otel_kit._exporters.push import DEFAULT_GRPC_ENDPOINT, DEFAULT_HTTP_ENDPOINT
from otel_kit.cli.collector_config import register
from otel_kit.generate.collector import COLLECTOR_IMAGE, CollectorOptions, generate
from tests import go_tools

COLLECTOR = Path(__file__).resolve().parents[2] / "collector"

MANIFEST = COLLECTOR / "build" / "manifest.yaml"
# The component type each module of the manifest brings.
MODULE_TYPES = {
    "otlpreceiver": "otlp",
    "batchprocessor": "batch",
    "memorylimiterprocessor": "memory_limiter",
    "transformprocessor": "transform",
    "prometheusexporter": "prometheus",
    "prometheusremotewriteexporter": "prometheusremotewrite",
    "loadbalancingexporter": "loadbalancing",
    "healthcheckextension": "health_check",
    "bearertokenauthextension": "bearertokenauth",
}
TOP_LEVEL = {"extensions", "receivers", "processors", "exporters", "connectors", "service"}
ENV_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def load(name: str) -> Any:
    return yaml.safe_load((COLLECTOR / name).read_text())


def merge(base: Any, overlay: Any) -> Any:
    """How the Collector merges several --config files: maps merge, lists are replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {k: merge(base[k], v) if k in base else v for k, v in overlay.items()} | {
            k: v for k, v in base.items() if k not in overlay
        }
    return overlay


def env_names(text: str) -> set[str]:
    """Environment variables a config references; every `${…}` must be `${env:NAME[:-x]}`."""
    names = set()
    for placeholder in ENV_PLACEHOLDER.findall(text):
        match = re.fullmatch(r"env:([A-Z_][A-Z0-9_]*)(:-.*)?", placeholder)
        assert match, f"${{{placeholder}}} is not an ${{env:NAME}} placeholder"
        names.add(match.group(1))
    return names


def check_collector(config: dict[str, Any]) -> None:
    """Pipelines reference defined components only, every defined component is used,
    memory_limiter first and batch last."""
    assert set(config) <= TOP_LEVEL
    service = config["service"]
    assert set(service.get("extensions", [])) == set(config.get("extensions", {}))
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline_id, pipeline in service["pipelines"].items():
        assert pipeline_id.split("/")[0] == "metrics"
        assert pipeline["receivers"] and pipeline["exporters"]
        for kind in used:
            for component_id in pipeline.get(kind, []):
                assert component_id in config[kind], f"{pipeline_id} uses undefined {component_id}"
                used[kind].add(component_id)
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter" and processors[-1] == "batch"
    for kind, ids in used.items():
        assert ids == set(config[kind]), f"defined but unused {kind}: {set(config[kind]) - ids}"


def port(endpoint: str) -> int:
    return int(endpoint.rpartition(":")[2])


def receiver_ports(config: dict[str, Any]) -> tuple[int, int]:
    protocols = config["receivers"]["otlp"]["protocols"]
    return port(protocols["grpc"]["endpoint"]), port(protocols["http"]["endpoint"])


# -- the shipped files are the generator's default output -------------------------------


def test_shipped_files_equal_the_generators_default_output() -> None:
    files = generate()
    assert sorted(files) == [
        "otelcol-agent.yaml",
        "otelcol-auth.yaml",
        "otelcol-config.yaml",
        "otelcol-remote-write.yaml",
        "prometheus.yml",
    ]
    for name, text in files.items():
        assert (COLLECTOR / name).read_text() == text, f"collector/{name}: regenerate it"


def k8s(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((COLLECTOR / "k8s" / name).read_text()) if doc]


def test_k8s_configmaps_hold_the_shipped_configs_verbatim() -> None:
    gateway = next(doc for doc in k8s("gateway.yaml") if doc["kind"] == "ConfigMap")
    agent = next(doc for doc in k8s("agent.yaml") if doc["kind"] == "ConfigMap")
    files = generate()
    assert gateway["data"] == {
        name: files[name] for name in ("otelcol-config.yaml", "otelcol-remote-write.yaml")
    }
    assert agent["data"] == {"otelcol-agent.yaml": files["otelcol-agent.yaml"]}


def component_types(config: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (kind, component_id.split("/")[0])
        for kind in TOP_LEVEL - {"service"}
        for component_id in config.get(kind) or {}
    }


def test_the_manifest_builds_exactly_the_components_the_configs_use() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    built = set()
    for kind in ("receivers", "processors", "exporters", "extensions"):
        for entry in manifest[kind]:
            module, version = entry["gomod"].split()
            assert version == f"v{manifest['dist']['version']}", entry  # one release
            built.add((kind, MODULE_TYPES[module.rsplit("/", 1)[1]]))
    used = set().union(*(component_types(yaml.safe_load(text)) for text in generate().values()))
    assert built == used
    assert COLLECTOR_IMAGE.endswith(f":{manifest['dist']['version']}")


# -- Collector configs -----------------------------------------------------------------------


def test_collector_config() -> None:
    config = load("otelcol-config.yaml")
    check_collector(config)
    assert receiver_ports(config) == (
        urlsplit(DEFAULT_GRPC_ENDPOINT).port,
        urlsplit(DEFAULT_HTTP_ENDPOINT).port,
    )
    pipeline = config["service"]["pipelines"]["metrics"]
    assert pipeline["processors"] == ["memory_limiter", "transform/identity", "batch"]
    assert pipeline["exporters"] == ["prometheus"]
    assert port(config["exporters"]["prometheus"]["endpoint"]) == 8889
    # job/instance come from service.name/service.instance.id; copying every resource
    # attribute onto every series would make collector mode differ from direct mode.
    exporter = config["exporters"]["prometheus"]
    assert "resource_to_telemetry_conversion" not in exporter
    # the labels of direct mode (otel_scope_* kept: the exporter's default); the apps'
    # timestamps (a frozen copy on a gateway an app moved away from is dropped); 4 push
    # intervals of 15 s, at least 1 min
    assert "without_scope_info" not in exporter and exporter["send_timestamps"] is True
    assert exporter["metric_expiration"] == "1m"
    statements = config["processors"]["transform/identity"]["metric_statements"][0]["statements"]
    assert 'set(attributes["service_name"], attributes["service.name"])' in statements[1]
    assert port(config["extensions"]["health_check"]["endpoint"]) == 13133
    assert env_names((COLLECTOR / "otelcol-config.yaml").read_text()) == set()


def test_remote_write_overlay_merges_into_a_valid_config() -> None:
    text = (COLLECTOR / "otelcol-remote-write.yaml").read_text()
    merged = merge(load("otelcol-config.yaml"), yaml.safe_load(text))
    check_collector(merged)
    pipeline = merged["service"]["pipelines"]["metrics"]
    assert pipeline["exporters"] == ["prometheus", "prometheusremotewrite"]
    assert pipeline["processors"] == ["memory_limiter", "transform/identity", "batch"]
    assert merged["exporters"]["prometheusremotewrite"]["endpoint"] == "${env:REMOTE_WRITE_URL}"
    assert env_names(text) == {"REMOTE_WRITE_URL", "REMOTE_WRITE_TENANT"}


def test_auth_overlay_requires_a_bearer_token_on_both_receivers() -> None:
    text = (COLLECTOR / "otelcol-auth.yaml").read_text()
    for base in ("otelcol-config.yaml", "otelcol-agent.yaml"):
        merged = merge(load(base), yaml.safe_load(text))
        check_collector(merged)
        for protocol in merged["receivers"]["otlp"]["protocols"].values():
            assert protocol["auth"] == {"authenticator": "bearertokenauth/otlp"}
            assert protocol["endpoint"].startswith("0.0.0.0:")  # the base's endpoint stays
    assert env_names(text) == {"OTLP_TOKEN"}


def test_k8s_agent_runs_on_every_node() -> None:
    agent = next(doc for doc in k8s("agent.yaml") if doc["kind"] == "DaemonSet")
    assert agent["spec"]["template"]["spec"]["tolerations"] == [{"operator": "Exists"}]


def test_agent_config_forwards_to_the_gateways_grpc_port() -> None:
    agent = load("otelcol-agent.yaml")
    check_collector(agent)
    assert receiver_ports(agent) == (4317, 4318)
    balancer = agent["exporters"]["loadbalancing"]
    assert balancer["routing_key"] == "resource"  # an app instance always hits one gateway
    # a string: the 0.161 config decoder refuses a number (tests/integration/test_collector.py)
    assert balancer["resolver"]["dns"]["port"] == str(
        receiver_ports(load("otelcol-config.yaml"))[0]
    )
    assert env_names((COLLECTOR / "otelcol-agent.yaml").read_text()) == {"GATEWAY_HOSTNAME"}


def test_generated_with_other_ports_and_remote_write() -> None:
    options = CollectorOptions(
        otlp_grpc_port=14317,
        otlp_http_port=14318,
        prometheus_port=19889,
        health_port=23133,
        remote_write_url="https://mimir.example.com/api/v1/push",
        collector_host="collector.internal",
        direct_targets=(("api", "api-1:8000"), ("api", "api-2:8000"), ("worker", "w:9464")),
    )
    files = generate(options)
    assert "otelcol-remote-write.yaml" not in files  # the URL went into the main config
    config = yaml.safe_load(files["otelcol-config.yaml"])
    check_collector(config)
    assert receiver_ports(config) == (14317, 14318)
    assert port(config["exporters"]["prometheus"]["endpoint"]) == 19889
    assert port(config["extensions"]["health_check"]["endpoint"]) == 23133
    remote = config["exporters"]["prometheusremotewrite"]
    assert remote["endpoint"] == "https://mimir.example.com/api/v1/push"
    exporters = config["service"]["pipelines"]["metrics"]["exporters"]
    assert exporters == ["prometheus", "prometheusremotewrite"]
    agent = yaml.safe_load(files["otelcol-agent.yaml"])
    check_collector(agent)
    assert agent["exporters"]["loadbalancing"]["resolver"]["dns"]["port"] == "14317"
    prometheus = yaml.safe_load(files["prometheus.yml"])
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in prometheus["scrape_configs"]
    }
    assert targets == {
        "otel-collector": ["collector.internal:19889"],
        "otel-collector-internal": ["collector.internal:8888"],
        "api": ["api-1:8000", "api-2:8000"],
        "worker": ["w:9464"],
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"otlp_grpc_port": 0}, "otlp_grpc_port = 0: expected a TCP port from 1 to 65535"),
        ({"prometheus_port": 4318}, "the Collector's ports must differ"),
        ({"remote_write_url": "mimir:9009"}, "expected an http:// or https:// URL"),
        ({"direct_targets": (("api", "api"),)}, "direct target api=api: expected JOB=HOST:PORT"),
        ({"push_interval": "15"}, "push_interval = '15': expected a duration such as 15s, 1m"),
        ({"remote_write_url": "http://mimir/\nx: y"}, "expected an http:// or https:// URL"),
        ({"collector_host": "otel\n  - evil:1"}, "collector_host = 'otel\\n  - evil:1': expected"),
        ({"collector_host": "otel:8889"}, "collector_host = 'otel:8889': expected a host name"),
        ({"push_interval": "0s"}, "push_interval = '0s': expected a duration"),
        ({"scrape_interval": "1d"}, "scrape_interval = '1d': expected a duration"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        CollectorOptions(**options)


# -- Prometheus ---------------------------------------------------------------------------------


def promtool(path: Path) -> None:
    result = subprocess.run(
        [go_tools.promtool3(), "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_passes_promtool_and_scrapes_the_collector() -> None:
    # Also checks the rule files the config loads (collector/rules/*.yml).
    promtool(COLLECTOR / "prometheus.yml")
    prometheus = load("prometheus.yml")
    assert prometheus["rule_files"] == ["rules/*.yml"]
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    collector = load("otelcol-config.yaml")
    assert jobs["otel-collector"]["honor_labels"] is True  # job/instance are the apps'
    (target,) = jobs["otel-collector"]["static_configs"][0]["targets"]
    assert port(target) == port(collector["exporters"]["prometheus"]["endpoint"])
    (target,) = jobs["otel-collector-internal"]["static_configs"][0]["targets"]
    readers = collector["service"]["telemetry"]["metrics"]["readers"]
    assert port(target) == readers[0]["pull"]["exporter"]["prometheus"]["port"]
    assert jobs["shop-direct"]["static_configs"][0]["targets"] == ["shop-direct:8000"]


def test_generated_prometheus_configs_pass_promtool(tmp_path: Path) -> None:
    no_direct = CollectorOptions(direct_targets=(), scrape_interval="30s")
    several = CollectorOptions(direct_targets=(("a", "a:1"), ("b", "b:2"), ("a", "c:3")))
    for number, options in enumerate((no_direct, several)):
        path = tmp_path / f"prometheus-{number}.yml"
        path.write_text(generate(options)["prometheus.yml"])
        promtool(path)


def test_k8s_scrape_config_passes_promtool(tmp_path: Path) -> None:
    (config_map,) = k8s("prometheus-scrape.yaml")
    prometheus = yaml.safe_load(config_map["data"]["prometheus.yml"])
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["otel-gateway"]["honor_labels"] is True
    keep = [rule["regex"] for rule in jobs["otel-gateway"]["relabel_configs"]]
    gateway = next(doc for doc in k8s("gateway.yaml") if doc["kind"] == "Deployment")
    ports = {p["name"]: p["containerPort"] for p in containers(gateway)[0]["ports"]}
    assert keep == ["otel-gateway", "metrics"] and ports["metrics"] == 8889
    assert jobs["otel-gateway"]["track_timestamps_staleness"] is True
    # the Collectors' own metrics, gateways and agents alike, for the otel-kit-collector alerts
    internal = jobs["otel-collector-internal"]["relabel_configs"]
    assert [rule["regex"] for rule in internal[:2]] == ["otel-gateway|otel-agent", "telemetry"]
    agent = next(doc for doc in k8s("agent.yaml") if doc["kind"] == "DaemonSet")
    assert containers(agent)[0]["ports"][2] == {"name": "telemetry", "containerPort": 8888}
    path = tmp_path / "prometheus.yml"
    path.write_text(config_map["data"]["prometheus.yml"])
    promtool(path)


# -- compose and Grafana ----------------------------------------------------------------------


def test_docker_compose_wires_the_shipped_files() -> None:
    compose = load("docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"shop", "shop-direct", "otel-collector", "prometheus", "grafana"}
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image"
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            assert (COLLECTOR / host).exists(), f"{name} mounts missing {host}"
    collector = services["otel-collector"]
    assert collector["image"] == COLLECTOR_IMAGE
    mounts = dict(volume.split(":")[1::-1] for volume in collector["volumes"])
    config_args = [arg.removeprefix("--config=") for arg in collector["command"]]
    assert [mounts[path] for path in config_args] == ["./otelcol-config.yaml"]
    published = {int(mapping.split(":")[1]) for mapping in collector["ports"]}
    assert published == {4317, 4318, 8889, 13133}
    for name, service in services.items():  # nothing unauthenticated on other interfaces
        assert all(m.startswith("127.0.0.1:") for m in service.get("ports", [])), name
    assert collector["mem_limit"] == "512m" and collector["environment"]["GOMEMLIMIT"] == "410MiB"
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?")  # no default password

    shop = services["shop"]["environment"]
    assert shop["OTEL_METRICS_EXPORTER"] == "otlp"
    assert shop["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert "OTEL_METRICS_EXPORTER" not in services["shop-direct"]["environment"]

    prometheus = services["prometheus"]
    mounts = dict(volume.split(":")[1::-1] for volume in prometheus["volumes"])
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus.yml"
    assert mounts["/etc/prometheus/rules"] == "./rules"  # rule_files: rules/*.yml

    grafana = services["grafana"]
    mounts = dict(volume.split(":")[1::-1] for volume in grafana["volumes"])
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    (provider,) = load("grafana/provisioning/dashboards/otel-kit.yml")["providers"]
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    (datasource,) = load("grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    # exemplars: stored by Prometheus, linked by their trace_id to the tracing data source
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    (destination,) = datasource["jsonData"]["exemplarTraceIdDestinations"]
    assert destination["name"] == "trace_id"
    assert destination["datasourceUid"] == "${TRACING_DATASOURCE_UID}"
    assert services["grafana"]["environment"]["TRACING_DATASOURCE_UID"].startswith(
        "${TRACING_DATASOURCE_UID:-"
    )
    assert "127.0.0.1:9090:9090" in prometheus["ports"]


# -- Kubernetes ----------------------------------------------------------------------------------


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return spec


@pytest.mark.parametrize(
    ("file", "kind"), [("gateway.yaml", "Deployment"), ("agent.yaml", "DaemonSet")]
)
def test_k8s_workloads(file: str, kind: str) -> None:
    docs = k8s(file)
    config_map = next(doc for doc in docs if doc["kind"] == "ConfigMap")
    workload = next(doc for doc in docs if doc["kind"] == kind)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = containers(workload)
    assert container["image"] == COLLECTOR_IMAGE
    (volume,) = workload["spec"]["template"]["spec"]["volumes"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (mount,) = container["volumeMounts"]
    assert mount["name"] == volume["name"]
    (config_file,) = [
        arg.removeprefix(f"--config={mount['mountPath']}/") for arg in container["args"]
    ]
    config = yaml.safe_load(config_map["data"][config_file])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["otlp-grpc"], ports["otlp-http"]) == receiver_ports(config)
    assert ports["health"] == port(config["extensions"]["health_check"]["endpoint"])
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    readers = config["service"]["telemetry"]["metrics"]["readers"]
    assert ports["telemetry"] == readers[0]["pull"]["exporter"]["prometheus"]["port"]
    if "prometheus" in config["exporters"]:
        assert ports["metrics"] == port(config["exporters"]["prometheus"]["endpoint"])
    # GOMEMLIMIT at 80 % of the memory limit, memory_limiter's hard limit (75 %) below it
    env = {item["name"]: item.get("value") for item in container["env"]}
    limit = container["resources"]["limits"]["memory"]
    mebibytes = int(limit[:-2]) * (1024 if limit.endswith("Gi") else 1)
    assert env["GOMEMLIMIT"] == f"{int(mebibytes * 0.8)}MiB"
    assert config["processors"]["memory_limiter"]["limit_percentage"] == 75
    for service in (doc for doc in docs if doc["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        for service_port in service["spec"]["ports"]:
            assert ports[service_port["targetPort"]] == service_port["port"]


def test_k8s_agents_resolve_every_gateway() -> None:
    agent = next(doc for doc in k8s("agent.yaml") if doc["kind"] == "DaemonSet")
    env = {item["name"]: item.get("value") for item in containers(agent)[0]["env"]}
    headless = next(
        doc
        for doc in k8s("gateway.yaml")
        if doc["kind"] == "Service" and doc["spec"].get("clusterIP") == "None"
    )
    metadata = headless["metadata"]
    assert (
        env["GATEWAY_HOSTNAME"] == f"{metadata['name']}.{metadata['namespace']}.svc.cluster.local"
    )
    (grpc,) = headless["spec"]["ports"]
    config = yaml.safe_load(generate()["otelcol-agent.yaml"])
    assert str(grpc["port"]) == config["exporters"]["loadbalancing"]["resolver"]["dns"]["port"]


def test_k8s_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((COLLECTOR / "k8s" / "kustomization.yaml").read_text())
    manifests = {path.name for path in (COLLECTOR / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert kustomization["resources"][0] == "namespace.yaml"
    assert set(kustomization["resources"]) == manifests
    namespaces = {
        doc["metadata"].get("namespace")
        for name in manifests - {"namespace.yaml"}
        for doc in k8s(name)
    }
    assert namespaces == {k8s("namespace.yaml")[0]["metadata"]["name"]}


# -- the command ------------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def root() -> None:
        """A root callback keeps collector-config a sub-command, as in otel-kit's app."""

    return app


def test_command_writes_the_default_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["collector-config", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    written = {path.name: path.read_text() for path in (tmp_path / "c").iterdir()}
    assert written == generate()
    assert (
        f"run: otelcol-contrib --config {tmp_path / 'c' / 'otelcol-config.yaml'}" in result.output
    )


def test_command_with_the_users_ports_and_options(tmp_path: Path) -> None:
    args = [
        "collector-config", "--out", str(tmp_path), "--otlp-grpc-port", "5317",
        "--otlp-http-port", "5318", "--prometheus-port", "9889",
        "--remote-write-url", "http://thanos-receive:19291/api/v1/receive",
        "--direct", "billing=billing:8000", "--direct", "billing=billing-2:8000",
    ]  # fmt: skip
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    expected = generate(
        CollectorOptions(
            otlp_grpc_port=5317,
            otlp_http_port=5318,
            prometheus_port=9889,
            remote_write_url="http://thanos-receive:19291/api/v1/receive",
            direct_targets=(("billing", "billing:8000"), ("billing", "billing-2:8000")),
        )
    )
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == expected
    config = yaml.safe_load((tmp_path / "otelcol-config.yaml").read_text())
    assert receiver_ports(config) == (5317, 5318)
    assert "prometheusremotewrite" in config["service"]["pipelines"]["metrics"]["exporters"]


@pytest.mark.parametrize(
    ("push_interval", "expiration"), [("1s", "1m"), ("15s", "1m"), ("20s", "80s"), ("1m", "4m")]
)
def test_metric_expiration_is_four_push_intervals(push_interval: str, expiration: str) -> None:
    files = generate(CollectorOptions(push_interval=push_interval))
    config = yaml.safe_load(files["otelcol-config.yaml"])
    assert config["exporters"]["prometheus"]["metric_expiration"] == expiration


def test_command_takes_the_push_interval(tmp_path: Path) -> None:
    args = ["collector-config", "--out", str(tmp_path), "--push-interval", "1m"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "otelcol-config.yaml").read_text())
    assert config["exporters"]["prometheus"]["metric_expiration"] == "4m"
    bad = CliRunner().invoke(cli(), [*args[:3], "--push-interval", "soon"])
    assert bad.exit_code == 2
    assert "push_interval = 'soon': expected a duration such as 15s, 1m or 1h" in bad.output


def test_command_without_direct_targets(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["collector-config", "--out", str(tmp_path), "--no-direct"])
    assert result.exit_code == 0, result.output
    jobs = [
        job["job_name"]
        for job in yaml.safe_load((tmp_path / "prometheus.yml").read_text())["scrape_configs"]
    ]
    assert jobs == ["otel-collector", "otel-collector-internal"]


def test_command_refuses_to_overwrite_a_different_file(tmp_path: Path) -> None:
    (tmp_path / "prometheus.yml").write_text("# mine\n")
    result = CliRunner().invoke(cli(), ["collector-config", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path / 'prometheus.yml'} exist(s) and differ; use --force" in result.output
    assert (tmp_path / "prometheus.yml").read_text() == "# mine\n"
    assert not (tmp_path / "otelcol-config.yaml").exists()
    forced = CliRunner().invoke(cli(), ["collector-config", "--out", str(tmp_path), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "prometheus.yml").read_text() == generate()["prometheus.yml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--otlp-http-port", "70000"], "otlp_http_port = 70000: expected a TCP port"),
        (["--direct", "billing"], "--direct 'billing': expected JOB=HOST:PORT"),
        (["--remote-write-url", "mimir"], "expected an http:// or https:// URL"),
    ],
)
def test_command_rejects_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli(), ["collector-config", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert list(tmp_path.iterdir()) == []
