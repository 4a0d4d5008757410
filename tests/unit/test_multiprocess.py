"""The multi-process view without processes: the merge rules, snapshots, folding dead
processes into the archive, the fork baseline, and SIGTERM handling only when asked.

Several participants in one test process stand for several processes: each has its own
MeterProvider, reader and socket in a shared directory, exactly as separate processes would.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from otel_kit import catalogue
from otel_kit._exporters import multiprocess
from otel_kit._exporters.multiprocess import (
    HistogramPoint,
    MetricPoints,
    Multiprocess,
    Snapshot,
    decode,
    encode,
    merge_into,
    snapshot_of,
    to_metrics_data,
    view,
)
from otel_kit._exporters.prometheus import PullReader
from otel_kit._instruments import FastInstruments
from otel_kit._otel_data import Baseline
from otel_kit.config import ConfigError
from tests.exposition import series, value

COUNT = "http_server_request_duration_seconds_count"
BOUNDS = (0.1, 1.0)


class Participant:
    """One 'process': its own provider, fast instruments and Multiprocess in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.fast = FastInstruments("test")
        resource = Resource.create({"service.name": "shop"})
        reader = PullReader(self.fast, resource, 2000)
        self.provider = MeterProvider(metric_readers=[reader], resource=resource)
        self.meter = self.provider.get_meter("test")
        self.requests = self.fast.histogram(catalogue.HTTP_SERVER_REQUEST_DURATION, BOUNDS, 100)
        self.active = self.fast.sum(catalogue.HTTP_SERVER_ACTIVE_REQUESTS, 100)
        self.gauge = self.meter.create_gauge("queue.depth")
        self.mp = Multiprocess(str(directory), reader, resource, keep_instance_id=False)

    def text(self) -> str:
        """What a scrape answered by this participant shows."""
        from prometheus_client.exposition import generate_latest

        return generate_latest(self.mp.registry).decode()

    def close(self) -> None:
        self.mp.close()
        self.provider.shutdown()


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "mp"


@pytest.fixture
def make(directory: Path) -> Iterator[type[Participant]]:
    made: list[Participant] = []

    class Made(Participant):
        def __init__(self) -> None:
            super().__init__(directory)
            made.append(self)

    yield Made
    for participant in made:
        participant.close()


def kill(participant: Participant) -> None:
    """What SIGKILL leaves: a socket file nobody holds, and no final snapshot."""
    sock = participant.mp._sock
    assert sock is not None
    participant.mp._sock = None  # its thread stops at the next message
    sock.sendto(b"wake up", sock.getsockname())
    participant.mp._thread.join(timeout=5)
    sock.close()


def get(route: str, status: int = 200) -> tuple[str, str, int, None]:
    return ("GET", route, status, None)


# --- merge rules, on snapshots directly --------------------------------------------------


def metric(kind: str, **points: float) -> MetricPoints:
    return MetricPoints(kind, "", "", {(("k", key),): v for key, v in points.items()})


def test_counters_and_histograms_add_up_over_live_and_dead_processes() -> None:
    hist = HistogramPoint(BOUNDS, [1, 2, 0], 1.5, 0.05, 0.9)
    one = {"c": metric("counter", a=2, b=1), "h": MetricPoints("histogram", "s", "", {(): hist})}
    two = {"c": metric("counter", a=3), "h": MetricPoints("histogram", "s", "", {(): hist.copy()})}
    total: Snapshot = {}
    merge_into(total, one, live=True)
    merge_into(total, two, live=False)
    assert total["c"].points == {(("k", "a"),): 5, (("k", "b"),): 1}
    merged = total["h"].points[()]
    assert (merged.counts, merged.sum, merged.min, merged.max) == ([2, 4, 0], 3.0, 0.05, 0.9)
    assert one["h"].points[()].counts == [1, 2, 0]  # the inputs are not changed


def test_gauges_and_updown_counters_only_from_live_processes() -> None:
    live = {"g": metric("gauge", a=5), "u": metric("updown", a=2)}
    other = {"g": metric("gauge", a=7), "u": metric("updown", a=3)}
    dead = {"g": metric("gauge", a=100), "u": metric("updown", a=100)}
    total: Snapshot = {}
    for part, is_live in ((live, True), (other, True), (dead, False)):
        merge_into(total, part, live=is_live)
    assert total["u"].points == {(("k", "a"),): 5}  # up-down counters add up
    assert total["g"].points == {(("k", "a"),): 7}  # gauges: the largest value


def test_fork_baseline_subtracts_counters_and_histograms_only() -> None:
    """On SDK data, as the reader gives it (`Baseline`, shared with push export)."""
    resource = Resource.create({})
    inherited: Snapshot = {
        "c": metric("counter", a=10),
        "u": metric("updown", a=4),
        "h": MetricPoints(
            "histogram", "s", "", {(): HistogramPoint(BOUNDS, [1, 1, 0], 0.6, 0.1, 0.5)}
        ),
    }
    now: Snapshot = {
        "c": metric("counter", a=12, b=1),
        "u": metric("updown", a=4),
        "h": MetricPoints(
            "histogram", "s", "", {(): HistogramPoint(BOUNDS, [1, 3, 1], 4.6, 0.1, 2)}
        ),
    }
    baseline = Baseline.of(to_metrics_data(inherited, resource), time.time_ns())
    own = snapshot_of(baseline.subtract(to_metrics_data(now, resource)))
    assert own["c"].points == {(("k", "a"),): 2, (("k", "b"),): 1}
    assert own["u"].points == {(("k", "a"),): 4}  # a state the child holds too, not a count
    point = own["h"].points[()]
    assert (point.counts, point.sum) == ([0, 2, 1], pytest.approx(4.0))


def test_snapshot_round_trip_keeps_attribute_types() -> None:
    key = (("flag", True), ("n", 3), ("name", "x"), ("ratio", 0.5), ("tags", ("a", "b")))
    snapshot = {
        "c": MetricPoints("counter", "1", "d", {key: 2.5}),
        "h": MetricPoints(
            "histogram", "s", "", {(): HistogramPoint(BOUNDS, [1, 0, 0], 0.01, 0.01, 0.01)}
        ),
    }
    decoded, extra = decode(encode(snapshot, pid=7))
    assert decoded == snapshot
    assert extra == {"format": 1, "pid": 7}
    with pytest.raises(ValueError):
        decode(json.dumps({"format": 999, "metrics": []}).encode())


# --- participants sharing a directory ----------------------------------------------------


def test_one_scrape_shows_every_process(make: type[Participant]) -> None:
    a, b = make(), make()
    for _ in range(3):
        a.requests.record(0.05, get("/items/{id}"))
    b.requests.record(0.5, get("/items/{id}"))
    b.requests.record(5, get("/items/{id}", 500))
    a.active.add(1, ("GET",))
    b.active.add(2, ("GET",))
    a.gauge.set(5)
    b.gauge.set(7)
    for text in (a.text(), b.text()):  # whichever process is scraped
        assert value(text, COUNT) == 5
        assert value(text, COUNT, http_response_status_code="200") == 4
        assert value(text, "http_server_request_duration_seconds_bucket", le="0.1") == 3
        assert value(text, "http_server_request_duration_seconds_bucket", le="1.0") == 4
        assert value(text, "http_server_request_duration_seconds_sum") == pytest.approx(5.65)
        assert value(text, "http_server_active_requests") == 3
        assert value(text, "queue_depth") == 7
        # one target, one instance id for the whole directory
        assert len(series(text, "target_info")) == 1
    ids = {s["service_instance_id"] for t in (a.text(), b.text()) for s in series(t, "target_info")}
    assert len(ids) == 1


def test_a_process_that_exits_keeps_its_counts_not_its_gauges(
    make: type[Participant], directory: Path
) -> None:
    a, b = make(), make()
    a.requests.record(0.05, get("/a"))
    b.requests.record(0.05, get("/b"))
    b.requests.record(0.05, get("/b"))
    a.active.add(1, ("GET",))
    b.active.add(2, ("GET",))
    b.gauge.set(7)
    a.gauge.set(5)
    b.close()  # its final snapshot, then its socket goes
    text = a.text()
    assert value(text, COUNT) == 3
    assert value(text, COUNT, http_route="/b") == 2
    assert value(text, "http_server_active_requests") == 1
    assert value(text, "queue_depth") == 5
    # folded into the archive; the dead process's files are gone
    names = sorted(p.name for p in directory.iterdir() if p.suffix in (".json", ".sock"))
    assert names == sorted(["archive.json", f"{a.mp._token}.json", f"{a.mp._token}.sock"])
    a.requests.record(0.05, get("/a"))
    assert value(a.text(), COUNT) == 4  # the archive is counted once, scrape after scrape
    assert value(a.text(), COUNT) == 4


def test_a_new_process_folds_what_ended_ones_left(make: type[Participant], directory: Path) -> None:
    """Recycled workers leave no files behind even when nobody scrapes."""
    a, b = make(), make()
    a.requests.record(0.05, get("/a"))
    b.requests.record(0.05, get("/b"))
    a.close()  # exits: final snapshot, no socket
    kill(b)  # killed: last snapshot (none yet), a dead socket
    c = make()
    deadline = time.monotonic() + 10
    while {p.name for p in directory.glob("*.json")} != {"archive.json", f"{c.mp._token}.json"}:
        c.mp.write_snapshot()
        assert time.monotonic() < deadline, sorted(p.name for p in directory.iterdir())
        time.sleep(0.01)
    assert sorted(p.name for p in directory.glob("*.sock")) == [f"{c.mp._token}.sock"]
    assert value(c.text(), COUNT) == 1  # a's request; b never wrote one


def test_a_killed_process_keeps_what_the_last_scrape_showed(
    make: type[Participant], directory: Path
) -> None:
    a, b = make(), make()
    b.requests.record(0.05, get("/b"))
    assert value(a.text(), COUNT) == 1  # b wrote its snapshot for this scrape
    b.requests.record(0.05, get("/b"))  # never written: lost when b is killed
    kill(b)
    assert value(a.text(), COUNT) == 1
    assert not (directory / f"{b.mp._token}.sock").exists()


def test_folded_processes_are_never_counted_twice(make: type[Participant], directory: Path) -> None:
    a = make()
    # What a process that exited left: a snapshot and no socket.
    left = {"http.server.request.duration": MetricPoints("histogram", "s", "", {
        (("http.request.method", "GET"),): HistogramPoint(BOUNDS, [2, 0, 0], 0.1, 0.05, 0.05)
    })}  # fmt: skip
    (directory / "0123456789ab.json").write_bytes(encode(left))
    assert value(a.text(), COUNT) == 2
    assert value(a.text(), COUNT) == 2  # a scrape in between (or the startup compaction)
    # A crash between writing the archive and removing the folded file leaves it behind:
    (directory / "0123456789ab.json").write_bytes(encode(left))
    assert value(a.text(), COUNT) == 2
    assert not (directory / "0123456789ab.json").exists()
    assert value(a.text(), COUNT) == 2


def test_unanswered_processes_are_waited_for_a_bounded_time(
    make: type[Participant], directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live process that does not answer (stopped, stuck): its last snapshot is used."""
    monkeypatch.setattr(view, "SCRAPE_WAIT", 0.2)
    a = make()
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stuck.bind(str(directory / "ba5eba11ba5e.sock"))
    left = {"app.jobs": metric("counter", a=4), "app.queue": metric("updown", a=3)}
    (directory / "ba5eba11ba5e.json").write_bytes(encode(left))
    try:
        text = a.text()
    finally:
        stuck.close()
    assert value(text, "app_jobs_total") == 4
    assert value(text, "app_queue") == 3  # still live: its state counts


def test_periodic_snapshots_and_answers_interleave(
    make: type[Participant], directory: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """With snapshots due all the time, requests and periodic writes keep being served (a
    zero timeout once made the thread fail and sleep, and scrapes wait for it)."""
    monkeypatch.setattr(multiprocess, "SNAPSHOT_INTERVAL", 0.001)
    a, b = make(), make()
    for i in range(50):
        b.requests.record(0.05, get("/b"))
        assert value(a.text(), COUNT) == i + 1
    snapshot = directory / f"{b.mp._token}.json"
    written = snapshot.stat().st_mtime_ns
    b.requests.record(0.05, get("/b"))
    deadline = time.monotonic() + 10
    while snapshot.stat().st_mtime_ns == written and time.monotonic() < deadline:
        time.sleep(0.01)
    assert value(b.text(), COUNT) == 51
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_fork_child_does_not_count_what_it_inherited(
    make: type[Participant], directory: Path
) -> None:
    """The at-fork hooks run here in one process: after them this participant is 'the child'
    (new socket and token, baseline taken). The 'parent' it was leaves after its snapshot."""
    a = make()
    for _ in range(10):
        a.requests.record(0.05, get("/x"))
    a.active.add(1, ("GET",))
    a.mp.write_snapshot()
    parent = a.mp._token
    kill(a)
    a.mp._before_fork()
    a.mp._after_fork_in_child()
    assert a.mp._token != parent
    a.requests.record(0.05, get("/x"))
    a.requests.record(0.05, get("/x"))
    text = a.text()
    assert value(text, COUNT) == 12  # the parent's 10 (its last snapshot) + the child's 2
    assert value(text, "http_server_active_requests") == 1  # the state the child holds


def test_sigterm_is_left_alone_unless_asked(make: type[Participant]) -> None:
    """An application that calls setup_metrics() itself keeps its signal handling: no
    process-wide replacement of `signal.signal`, no SIGTERM handler."""
    before = (signal.signal, signal.getsignal(signal.SIGTERM))
    make()
    assert signal.signal is before[0]
    assert signal.getsignal(signal.SIGTERM) == before[1]


# Builds a participant that handles SIGTERM, resets SIGTERM to the default as gunicorn's
# UvicornWorker does, counts 3 jobs (never snapshotted: periodic snapshots are 5 s apart) and
# sends itself SIGTERM.
SIGTERM_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    from otel_kit._exporters.multiprocess import Multiprocess
    from otel_kit._exporters.prometheus import PullReader
    from otel_kit._instruments import FastInstruments

    original = signal.signal
    resource = Resource.create({"service.name": "shop"})
    reader = PullReader(FastInstruments("test"), resource, 2000)
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    mp = Multiprocess(sys.argv[1], reader, resource, keep_instance_id=False, handle_sigterm=True)
    assert signal.signal is not original, "signal.signal not replaced"
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "no SIGTERM handler"
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "the default came back"
    provider.get_meter("app").create_counter("jobs").add(3)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
""")


def test_sigterm_writes_the_final_snapshot_when_asked(directory: Path) -> None:
    """With `handle_sigterm` (in a process of its own: the test process keeps its handlers),
    SIGTERM's default action first writes the final snapshot, then ends the process as
    SIGTERM does."""
    process = subprocess.run(
        [sys.executable, "-c", SIGTERM_SCRIPT, str(directory)],
        capture_output=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert process.returncode == -signal.SIGTERM, process.stderr.decode()
    (snapshot,) = [p for p in directory.glob("*.json") if p.name != "archive.json"]
    jobs = decode(snapshot.read_bytes())[0]["jobs"]
    assert jobs.points == {(): 3}
    assert not list(directory.glob("*.sock"))  # it left the view


def test_directory_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"OTEL_KIT_MULTIPROC_DIR = .* at most 76 characters"):
        multiprocess.check_directory(str(tmp_path / ("d" * 80)))
    directory = multiprocess.check_directory(str(tmp_path / "new"))
    assert directory.is_dir() and directory.is_absolute()
    held = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    held.bind(str(directory / "aaaaaaaaaaaa.sock"))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "bbbbbbbbbbbb.sock"))
    dead.close()
    (directory / "bbbbbbbbbbbb.json").write_text("{}")
    try:
        assert multiprocess.live_processes(directory) == ["aaaaaaaaaaaa"]
    finally:
        held.close()
    multiprocess.reset(directory)
    assert list(directory.iterdir()) == []
