"""`otel-kit run` in Collector mode with several workers: one OTLP stream per process."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.otel_kit_run import FORMS, otel_kit_run
from tests.integration.otlp_receiver import OTLPReceiver, resource, total_count
from tests.integration.processes import free_port

pytestmark = pytest.mark.integration
DURATION = "http.server.request.duration"


@pytest.mark.parametrize(
    "form", ["gunicorn -w 2", "gunicorn -w 2 --preload", "uvicorn --workers 2"]
)
def test_each_worker_pushes_its_own_stream(tmp_path: Path, form: str) -> None:
    """Workers forked from a process that set up already (gunicorn's arbiter under `otel-kit
    run`, --preload) must not push under their parent's service.instance.id: a Collector would
    take their cumulative counts for one stream going up and down."""
    command, workers = FORMS[form]
    port = free_port()
    with OTLPReceiver() as receiver:
        env = {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
        }
        with (
            otel_kit_run(tmp_path, command(port), env=env, port=port, ready="/items/0") as run,
            httpx.Client(base_url=run.base) as client,
        ):
            for i in range(200):
                response = client.get(f"/items/{i}", headers={"Connection": "close"})
                assert response.status_code == 200
        requests = receiver.requests()
    latest: dict[str, float] = {}
    for request in requests:
        counted = total_count(request, DURATION)
        if counted:
            latest[resource(request)["service.instance.id"]] = counted
    # Usually every worker serves some requests; on a busy machine one may serve them all. Two
    # workers pushing under one id would show as one stream holding only one worker's count.
    assert 1 <= len(latest) <= workers
    assert sum(latest.values()) == 201  # 200 + the readiness probe
