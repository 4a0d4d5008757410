"""bench/readme.py: the README's performance section from the committed bench/results."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_readme() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_readme", BENCH / "readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


readme = load_readme()


def test_section_holds_the_committed_numbers() -> None:
    text = readme.section(BENCH / "results")
    results = json.loads((BENCH / "results" / "results.json").read_text())
    for rows in results["summary"].values():
        kit = next(r for r in rows if r["variant"] == "otel-kit")
        assert f"| {kit['rps_median']:,.0f} | **{kit['ratio_to_bare']:.2f}** |" in text
    instructions = json.loads((BENCH / "results" / "instructions.json").read_text())
    per = {r["variant"]: r["per_request"] for r in instructions["instructions"]}
    assert f"adds {(per['otel-kit'] - per['bare']) / 1000:.1f}k instructions" in text
    wsgi = {
        r["variant"]: r for r in json.loads((BENCH / "results" / "wsgi.json").read_text())["rows"]
    }
    django = wsgi["django django-prometheus"]
    assert f"| Django + django-prometheus | {django['rps_ratio_quartiles'][1]:.2f} |" in text
    assert all(len(line) <= readme.WIDTH for line in text.splitlines() if line[:1] != "|")


def test_absent_or_reshaped_results_are_not_measured(tmp_path: Path) -> None:
    shutil.copy(BENCH / "results" / "results.json", tmp_path)
    (tmp_path / "wsgi.json").write_text(json.dumps({"rows": [{"variant": 1}]}))
    (tmp_path / "memory.json").write_text("not json")
    text = readme.section(tmp_path)
    assert "| **otel-kit** |" in text
    assert "WSGI overhead (wsgi.json): not measured." in text
    assert "Memory per series (memory.json): not measured." in text
    assert "Instruction counts (instructions.json): not measured." in text


def test_write_replaces_only_between_the_markers(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text(f"# x\n\n## Performance\n\n{readme.START}\nold\n{readme.END}\n\n## Next\n")
    args = ["--results", str(BENCH / "results"), "--readme", str(path)]
    assert readme.main([*args, "--check"]) == 1
    assert readme.main([*args, "--write"]) == 0
    new = path.read_text()
    assert new.startswith(f"# x\n\n## Performance\n\n{readme.START}\n")
    assert new.endswith(f"{readme.END}\n\n## Next\n")
    assert "old" not in new and readme.section(BENCH / "results") in new
    assert readme.main([*args, "--check"]) == 0


def test_write_without_markers_says_which() -> None:
    with pytest.raises(SystemExit, match="perf:start"):
        readme.replaced("## Performance\n\nhand-written\n", "new\n")
