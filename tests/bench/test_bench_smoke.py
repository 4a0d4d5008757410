"""Smoke test for bench/http_overhead.py: it runs end to end and writes its results.

No assertion on speed: timings depend on the machine and are reported, never tested.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "http_overhead.py"


@pytest.mark.integration
def test_quick_run_writes_results(tmp_path: Path) -> None:
    assert shutil.which("wrk"), "the benchmark needs wrk: apt-get install wrk"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--variants", "bare,otel-kit", "--out", tmp_path],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    result = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.md").exists()
    assert result["summary"], "no server flavour was run"
    for flavour, rows in result["summary"].items():
        by_variant = {row["variant"]: row for row in rows}
        assert set(by_variant) == {"bare", "otel-kit"}, flavour
        for row in rows:
            assert row["rps_median"] > 0, (flavour, row)
    counted = [run["counted"] for run in result["runs"] if run["variant"] == "otel-kit"]
    assert counted, "otel-kit was not run"
    assert all(c > 0 for c in counted)
