"""A setup with a multi-process directory, in one process: its render() is the merged view,
it claims the metrics port, and it leaves the view at shutdown. (Several processes:
tests/unit/test_multiprocess.py with participants, test_run.py with real servers.)"""

from __future__ import annotations

import os
from pathlib import Path

from otel_kit._exporters.prometheus import prometheus_families
from tests.exposition import series, value
from tests.handles import MakeHandle


def test_setup_with_a_directory(make_handle: MakeHandle, tmp_path: Path) -> None:
    """The public path: the handle's render() is the merged view; the same exposition as a
    single process, but for one instance id shared by the directory."""
    directory = tmp_path / "mp"
    handle = make_handle(
        prometheus_host="127.0.0.1", prometheus_port=0, multiproc_dir=str(directory)
    )
    counter = handle.meter_provider.get_meter("app").create_counter("jobs")
    counter.add(3, {"queue": "mail"})
    text = handle.render().decode()
    assert value(text, "jobs_total", queue="mail") == 3
    instance = (directory / "instance.id").read_text()
    assert series(text, "target_info")[0]["service_instance_id"] == instance
    assert handle.prometheus_port  # the first process here claims the port
    shared = handle._pipeline.multiprocess
    assert shared is not None
    families = list(prometheus_families(shared.collect()))
    assert "jobs" in {f.name for f in families}
    handle.shutdown()
    assert not any(p.suffix == ".sock" for p in directory.iterdir())
    assert os.path.exists(directory / "lock")
