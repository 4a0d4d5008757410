"""`otel-kit check` against the real `promtool check metrics` (issue 19, item 7): whatever
promtool flags, check reports too, on otel-kit's own output as info (the semantic-conventions
`*_count` gauges promtool exits 3 on), on crafted names as a warning or the `promtool-lint`
info."""

from __future__ import annotations

import shutil
import subprocess

from sqlalchemy import create_engine, text
from starlette.applications import Starlette
from starlette.routing import Route

from tests.check_command import DATA, findings, run
from tests.handles import MakeHandle

SEMCONV = "; an OpenTelemetry semantic-conventions name"


def promtool(exposition: str) -> tuple[int, set[tuple[str, str]]]:
    """promtool's exit status and its findings as (family, message)."""
    path = shutil.which("promtool")
    assert path, "promtool is installed by .ci/run (Debian package prometheus)"
    done = subprocess.run(
        [path, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60
    )
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode, {tuple(line.split(" ", 1)) for line in lines if line}  # type: ignore[misc]


def test_otel_kits_exposition_promtool_findings_are_check_infos(make_handle: MakeHandle) -> None:
    app = Starlette(routes=[Route("/", lambda request: None)])
    handle = make_handle(app)
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as connection:  # db_client_connection_count, a semconv gauge
            connection.execute(text("SELECT 1"))
        exposition = handle.render().decode()
    finally:
        engine.dispose()  # Python 3.13 warns about an unclosed sqlite3 connection at its GC
    status, flagged = promtool(exposition)
    assert status == 3  # lint findings only
    assert flagged == {
        (name, 'non-histogram and non-summary metrics should not have "_count" suffix')
        for name in (
            "db_client_connection_count",
            "process_thread_count",
            "process_unix_file_descriptor_count",
        )
    }
    result = run("-", "--fail-on", "warning", stdin=exposition)
    assert result.exit_code == 0, result.output  # info never fails
    assert result.output.splitlines()[-1] == "0 errors, 0 warnings, 3 info: passes"
    assert {(f[0], f[1], f[2], f[5]) for f in findings("-", stdin=exposition)} == {
        ("info", "promtool-lint", family, message + SEMCONV) for family, message in flagged
    }


def test_every_promtool_finding_on_crafted_names_is_a_check_finding() -> None:
    """One family per promtool rule; the ones no warning covers are `promtool-lint` infos."""
    exposition = (DATA / "promtool-lint.prom").read_text()
    status, flagged = promtool(exposition)
    assert status == 3
    assert len(flagged) == 11
    found = findings("-", stdin=exposition)
    assert {(family, message.removesuffix(SEMCONV)) for *_, family, _, _, message in found} == (
        flagged
    )
    assert {severity for severity, *_ in found} == {"info"}
    # a name also caught by a warning: promtool's finding is not repeated as info
    both = "a_gauge_total gauge 1\nqueue_ms gauge 1\nnohelp gauge 1\nd_count counter 1\n"
    crafted = "".join(
        f"# HELP {name} x\n" * (name != "nohelp") + f"# TYPE {name} {kind}\n{name} {value}\n"
        for name, kind, value in (line.split() for line in both.splitlines())
    )
    status, flagged = promtool(crafted)
    assert status == 3
    assert {family for family, _ in flagged} == {"a_gauge_total", "queue_ms", "nohelp", "d_count"}
    assert [f[:3] for f in findings("-", stdin=crafted)] == [
        ("warning", "gauge-named-like-counter", "a_gauge_total"),
        ("info", "promtool-lint", "a_gauge_total"),  # the type in the name: no warning has it
        ("warning", "unit-suffix-mismatch", "queue_ms"),
        ("warning", "missing-help", "nohelp"),
        ("warning", "counter-without-total", "d_count"),
    ]
