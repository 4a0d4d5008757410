"""A protected metrics endpoint with real processes: `otel-kit run --metrics-bearer-token ...
uvicorn` scraped by a real Prometheus with the credentials shipped in collector/prometheus.yml's
example, and without them; the separate metrics port of `otel-kit run` with basic auth."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from otel_kit.generate.collector import generate
from tests.conftest import value
from tests.integration.conftest import free_port
from tests.integration.prometheus_server import prometheus, query, wait_for
from tests.integration.test_run import otel_kit_run, uvicorn

pytestmark = pytest.mark.integration

COUNT = "http_server_request_duration_seconds_count"
ITEMS = "/items/{item_id}"
TOKEN = "integration-T0ken"
PASSWORD = "integration-pa:ss"
N = 20

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
    (directory / "metrics-token").write_text(TOKEN + "\n")  # Prometheus strips the newline
    (directory / "metrics-pw").write_text(PASSWORD)
    return {
        name: line.replace("/etc/prometheus/", f"{directory}/")
        for name, line in zip(("bearer", "basic"), lines, strict=True)
    }


def test_prometheus_scrapes_a_protected_app_only_with_credentials(tmp_path: Path) -> None:
    port = free_port()
    options = ["--metrics-bearer-token", TOKEN, "--metrics-basic-auth", f"prometheus:{PASSWORD}"]
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
        text = httpx.get(metrics, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text
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
        f"prometheus:{PASSWORD}",
    ]
    command = uvicorn(port, "--workers", "2")
    with otel_kit_run(tmp_path, command, options=options, port=port, ready="/items/0") as run:
        run.requests(N)
        assert run.get("/metrics").status_code == 404  # not on the app
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        refused = httpx.get(url, auth=("prometheus", "wrong"), timeout=10)
        text = httpx.get(url, auth=("prometheus", PASSWORD), timeout=10).text
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Basic realm="metrics", charset="UTF-8"'
    assert value(text, COUNT, http_route=ITEMS) == N + 1  # both workers' requests
