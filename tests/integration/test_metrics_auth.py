"""A protected metrics endpoint on real sockets: the separate metrics port of an in-process
setup with bearer token and basic auth, on `prometheus_host` only, scraped by `otel-kit check`
and `top`; with real processes, `otel-kit run --metrics-bearer-token ... uvicorn` scraped by a
real Prometheus with the credentials shipped in collector/prometheus.yml's example, and without
them, and the separate metrics port of `otel-kit run` with basic auth."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from otel_kit.cli._app import app as cli
from otel_kit.generate.collector import generate
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.integration.otel_kit_run import otel_kit_run, uvicorn
from tests.integration.processes import free_port
from tests.integration.prometheus_server import prometheus, query, wait_for
from tests.metrics_auth import (
    CHALLENGE_BASIC,
    CHALLENGE_BEARER,
    PASSWORD,
    TOKEN,
    USER,
    assert_refused,
    basic,
    bearer,
    client,
    make_app,
)

pytestmark = pytest.mark.integration

COUNT = "http_server_request_duration_seconds_count"
ITEMS = "/items/{item_id}"
RUN_TOKEN = "integration-T0ken"  # for `otel-kit run` and Prometheus
RUN_PASSWORD = "integration-pa:ss"
N = 20


# -- the separate metrics port of an in-process setup ----------------------------------------


async def test_separate_port_with_credentials(make_handle: MakeHandle) -> None:
    app = make_app()
    handle = make_handle(
        app, prometheus_host="127.0.0.1", prometheus_port=0, metrics_bearer_token=TOKEN
    )
    async with client(app) as c:
        assert (await c.get("/items/7")).status_code == 200
        assert (await c.get("/metrics", headers=bearer(TOKEN))).status_code == 404  # not on the app
    url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
    with httpx.Client(timeout=10) as direct:
        assert_refused(direct.get(url), CHALLENGE_BEARER)
        assert_refused(direct.get(url, headers=bearer("nope")), CHALLENGE_BEARER)
        assert_refused(direct.post(url, headers=bearer("nope")), CHALLENGE_BEARER)
        ok = direct.get(url, headers=bearer(TOKEN))
        lower = direct.get(url, headers={"Authorization": f"BEARER {TOKEN}"})
    assert ok.status_code == lower.status_code == 200
    assert value(ok.text, COUNT, http_route="/items/{item_id}") == 1


def test_separate_port_with_basic_auth(make_handle: MakeHandle) -> None:
    handle = make_handle(
        prometheus_host="127.0.0.1", prometheus_port=0, metrics_basic_auth=f"{USER}:{PASSWORD}"
    )
    url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
    with httpx.Client(timeout=10) as direct:
        assert_refused(direct.get(url), CHALLENGE_BASIC)
        assert_refused(direct.get(url, headers=basic(USER, "x")), CHALLENGE_BASIC)
        ok = direct.get(url, headers=basic(USER, PASSWORD))
    assert ok.status_code == 200
    assert series(ok.text, "target_info")


def loopback_alias_available() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.2", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(
    not loopback_alias_available(), reason="this kernel does not route 127.0.0.2 to loopback"
)
@pytest.mark.parametrize(
    ("host", "other"), [("127.0.0.1", "127.0.0.2"), ("127.0.0.2", "127.0.0.1")]
)
def test_the_metrics_port_listens_on_prometheus_host_only(
    make_handle: MakeHandle, host: str, other: str
) -> None:
    handle = make_handle(prometheus_host=host, prometheus_port=0)
    port = handle.prometheus_port
    assert httpx.get(f"http://{host}:{port}/metrics", timeout=10).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{other}:{port}/metrics", timeout=10)


def test_check_and_top_scrape_a_protected_endpoint(make_handle: MakeHandle) -> None:
    handle = make_handle(
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        metrics_bearer_token=TOKEN,
        metrics_basic_auth=f"{USER}:{PASSWORD}",
    )
    url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
    runner = CliRunner()
    env = {"COLUMNS": "200"}

    missing = runner.invoke(cli, ["check", url], env=env)
    assert missing.exit_code == 2
    assert f"{url} answered HTTP 401 (give --bearer-token or --basic-auth)" in missing.stderr
    wrong = runner.invoke(cli, ["top", url, "--once", "--bearer-token", "nope"], env=env)
    assert wrong.exit_code == 2
    assert f"{url} answered HTTP 401 (credentials refused)" in wrong.stderr

    given = [
        runner.invoke(cli, ["check", url, "--bearer-token", TOKEN, "--json"], env=env),
        runner.invoke(cli, ["check", url, "--basic-auth", f"{USER}:{PASSWORD}", "--json"], env=env),
        runner.invoke(
            cli, ["check", url, "--json"], env={**env, "OTEL_KIT_METRICS_BEARER_TOKEN": TOKEN}
        ),
    ]
    for result in given:
        assert result.exit_code == 0, result.output
        families = {family["name"] for family in json.loads(result.stdout)["families"]}
        assert {"target_info", "process_cpu_time_seconds_total"} <= families
    top = runner.invoke(
        cli,
        ["top", url, "--once", "--interval", "0.1"],
        env={**env, "OTEL_KIT_METRICS_BASIC_AUTH": f"{USER}:{PASSWORD}"},
    )
    assert top.exit_code == 0, top.output
    assert "otel-kit top" in top.stdout


# -- otel-kit run and Prometheus ---------------------------------------------------------------

JOB = """\
  - job_name: {job}
    {auth}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def shipped_examples(directory: Path) -> dict[str, str]:
    """The commented `authorization:` and `basic_auth:` lines of collector/prometheus.yml, with
    their files in `directory` holding the test's credentials."""
    lines = re.findall(
        r"^  #   ((?:authorization|basic_auth): .*)$", generate()["prometheus.yml"], re.MULTILINE
    )
    assert [line.partition(":")[0] for line in lines] == ["authorization", "basic_auth"]
    (directory / "metrics-token").write_text(RUN_TOKEN + "\n")  # Prometheus strips the newline
    (directory / "metrics-pw").write_text(RUN_PASSWORD)
    return {
        name: line.replace("/etc/prometheus/", f"{directory}/")
        for name, line in zip(("bearer", "basic"), lines, strict=True)
    }


def test_prometheus_scrapes_a_protected_app_only_with_credentials(tmp_path: Path) -> None:
    port = free_port()
    options = [
        "--metrics-bearer-token",
        RUN_TOKEN,
        "--metrics-basic-auth",
        f"prometheus:{RUN_PASSWORD}",
    ]
    (tmp_path / "prometheus").mkdir()
    jobs = {
        **shipped_examples(tmp_path / "prometheus"),
        "anonymous": "# no credentials",
        "wrong": "authorization: {credentials: not-the-token}",
    }
    config = "global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n" + "".join(
        JOB.format(job=job, auth=auth, port=port) for job, auth in jobs.items()
    )
    with otel_kit_run(tmp_path, uvicorn(port), options=options, port=port, ready="/items/0") as run:
        run.requests(N)
        metrics = run.base + "/metrics"
        refused = httpx.get(metrics, timeout=10)
        assert refused.status_code == 401, refused.text
        assert refused.headers.get_list("www-authenticate") == [
            'Bearer realm="metrics"',
            'Basic realm="metrics", charset="UTF-8"',
        ]
        assert "http_server" not in refused.text
        with prometheus(config, tmp_path / "prometheus") as prom:
            for job in ("bearer", "basic"):
                wait_for(prom, f'up{{job="{job}"}} == 1')
                expr = f'{COUNT}{{job="{job}", http_route="{ITEMS}"}}'
                # the N requests and the ready probe
                (result,) = wait_for(prom, f"{expr} == {N + 1}")
                assert result["metric"]["http_response_status_code"] == "200"
            for job in ("anonymous", "wrong"):
                wait_for(prom, f'up{{job="{job}"}} == 0')
                assert query(prom, f'{{job="{job}", __name__=~"http_.*|target_info"}}') == []
            # several refused and accepted scrapes later: none of them was counted
            wait_for(prom, "min(count_over_time(up[1m])) >= 3")
        text = httpx.get(metrics, headers={"Authorization": f"Bearer {RUN_TOKEN}"}, timeout=10).text
    assert value(text, COUNT) == N + 1
    assert value(text, COUNT, http_route=ITEMS, http_response_status_code="200") == N + 1


def test_otel_kit_run_metrics_port_with_basic_auth(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    options = [
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        str(metrics_port),
        "--metrics-basic-auth",
        f"prometheus:{RUN_PASSWORD}",
    ]
    command = uvicorn(port, "--workers", "2")
    with otel_kit_run(tmp_path, command, options=options, port=port, ready="/items/0") as run:
        run.requests(N)
        assert run.get("/metrics").status_code == 404  # not on the app
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        refused = httpx.get(url, auth=("prometheus", "wrong"), timeout=10)
        text = httpx.get(url, auth=("prometheus", RUN_PASSWORD), timeout=10).text
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Basic realm="metrics", charset="UTF-8"'
    assert value(text, COUNT, http_route=ITEMS) == N + 1  # both workers' requests
