"""The multi-process view without processes: the merge rules, snapshots, folding dead
processes into the archive, the fork baseline, and SIGTERM handling only when asked.

Several participants in one test process stand for several processes: each has its own
MeterProvider, reader and socket in a shared directory, exactly as separate processes would.
"""

from __future__ import annotations

import contextlib
import itertools
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
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from otel_kit import catalogue
from otel_kit._exporters import multiprocess
from otel_kit._exporters.multiprocess import (
    HistogramPoint,
    MetricKey,
    MetricPoints,
    Multiprocess,
    ScopeKey,
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

    def __init__(self, directory: Path, limit: int = 2000) -> None:
        self.fast = FastInstruments("test")
        resource = Resource.create({"service.name": "shop"})
        reader = PullReader(self.fast, resource, 2000)
        self.provider = MeterProvider(metric_readers=[reader], resource=resource)
        self.meter = self.provider.get_meter("test")
        self.requests = self.fast.histogram(catalogue.HTTP_SERVER_REQUEST_DURATION, BOUNDS, 100)
        self.active = self.fast.sum(catalogue.HTTP_SERVER_ACTIVE_REQUESTS, 100)
        self.gauge = self.meter.create_gauge("queue.depth")
        self.mp = Multiprocess(
            str(directory), reader, resource, keep_instance_id=False, cardinality_limit=limit
        )

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
        def __init__(self, limit: int = 2000) -> None:
            super().__init__(directory, limit)
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


def leave(path: Path, data: bytes) -> None:
    """A snapshot file as processes write it (whole, by rename): a background compaction may
    read it at any moment."""
    tmp = path.with_name(path.name + ".test")
    tmp.write_bytes(data)
    tmp.replace(path)


def get(route: str, status: int = 200) -> tuple[str, str, int, None, str, str]:
    return ("GET", route, status, None, "http", "1.1")


# --- merge rules, on snapshots directly --------------------------------------------------


SCOPE: ScopeKey = ("app", "1.0", "", (("team", "shop"),))
K: dict[str, MetricKey] = {name: (SCOPE, name) for name in "chug"}  # a metric of the app's meter


def metric(kind: str, **points: float) -> MetricPoints:
    return MetricPoints(kind, "", "", {(("k", key),): v for key, v in points.items()})


def test_counters_and_histograms_add_up_over_live_and_dead_processes() -> None:
    hist = HistogramPoint(BOUNDS, [1, 2, 0], 1.5, 0.05, 0.9)
    one = {
        K["c"]: metric("counter", a=2, b=1),
        K["h"]: MetricPoints("histogram", "s", "", {(): hist}),
    }
    two = {
        K["c"]: metric("counter", a=3),
        K["h"]: MetricPoints("histogram", "s", "", {(): hist.copy()}),
    }
    total: Snapshot = {}
    merge_into(total, one, live=True, limit=2000)
    merge_into(total, two, live=False, limit=2000)
    assert total[K["c"]].points == {(("k", "a"),): 5, (("k", "b"),): 1}
    merged = total[K["h"]].points[()]
    assert (merged.counts, merged.sum, merged.min, merged.max) == ([2, 4, 0], 3.0, 0.05, 0.9)
    assert one[K["h"]].points[()].counts == [1, 2, 0]  # the inputs are not changed


def test_gauges_and_updown_counters_only_from_live_processes() -> None:
    live = {K["g"]: metric("gauge", a=5), K["u"]: metric("updown", a=2)}
    other = {K["g"]: metric("gauge", a=7), K["u"]: metric("updown", a=3)}
    dead = {K["g"]: metric("gauge", a=100), K["u"]: metric("updown", a=100)}
    total: Snapshot = {}
    for part, is_live in ((live, True), (other, True), (dead, False)):
        merge_into(total, part, live=is_live, limit=2000)
    assert total[K["u"]].points == {(("k", "a"),): 5}  # up-down counters add up
    assert total[K["g"]].points == {(("k", "a"),): 7}  # gauges: the largest value


def test_fork_baseline_subtracts_counters_and_histograms_only() -> None:
    """On SDK data, as the reader gives it (`Baseline`, shared with push export)."""
    resource = Resource.create({})
    inherited: Snapshot = {
        K["c"]: metric("counter", a=10),
        K["u"]: metric("updown", a=4),
        K["h"]: MetricPoints(
            "histogram", "s", "", {(): HistogramPoint(BOUNDS, [1, 1, 0], 0.6, 0.1, 0.5)}
        ),
    }
    now: Snapshot = {
        K["c"]: metric("counter", a=12, b=1),
        K["u"]: metric("updown", a=4),
        K["h"]: MetricPoints(
            "histogram", "s", "", {(): HistogramPoint(BOUNDS, [1, 3, 1], 4.6, 0.1, 2)}
        ),
    }
    baseline = Baseline.of(to_metrics_data(inherited, resource), time.time_ns())
    own = snapshot_of(baseline.subtract(to_metrics_data(now, resource)))
    assert own[K["c"]].points == {(("k", "a"),): 2, (("k", "b"),): 1}
    assert own[K["u"]].points == {(("k", "a"),): 4}  # a state the child holds too, not a count
    point = own[K["h"]].points[()]
    assert (point.counts, point.sum) == ([0, 2, 1], pytest.approx(4.0))


def test_snapshot_round_trip_keeps_attribute_types() -> None:
    key = (("flag", True), ("n", 3), ("name", "x"), ("ratio", 0.5), ("tags", ("a", "b")))
    snapshot = {
        K["c"]: MetricPoints("counter", "1", "d", {key: 2.5}),
        K["h"]: MetricPoints(
            "histogram", "s", "", {(): HistogramPoint(BOUNDS, [1, 0, 0], 0.01, 0.01, 0.01)}
        ),
    }
    decoded, extra = decode(encode(snapshot, pid=7))
    assert decoded == snapshot
    assert extra == {"format": 2, "pid": 7}
    with pytest.raises(ValueError):
        decode(json.dumps({"format": 999, "metrics": []}).encode())


GOOD_HISTOGRAM = [[["k", "a"]], [0.1, 1.0], [1, 0, 0], 0.01, 0.01, 0.01]


@pytest.mark.parametrize(
    ("position", "bad"),
    [
        (1, [0.1, True]),  # bounds: a bool is no number
        (1, [1.0, 0.1]),  # out of order
        (1, "ab"),
        (2, [1, 0, True]),  # counts: no bools
        (2, [1, 0, -1]),  # nor negative ones
        (2, [1, 0, 0.5]),
        (2, [1, 0]),  # one per bucket
        (2, "abc"),
        (3, "0.01"),  # sum
        (5, False),  # max
        (0, [["k", {"a": 1}]]),  # attribute values: scalars, or lists of them
        (0, [["k", [1, [2]]]]),
        (0, [[1, "a"]]),  # attribute names: text
        (6, 0),  # exemplars: a list
    ],
)
def test_a_malformed_histogram_point_makes_a_malformed_snapshot(position: int, bad: object) -> None:
    point: list[object] = list(GOOD_HISTOGRAM)
    point[position:position + 1] = [bad]  # fmt: skip
    metric = [["app", "", "", []], "h", "histogram", "s", "", [point]]
    document = {"format": 2, "metrics": [metric]}
    assert decode(json.dumps({**document, "metrics": [[*metric[:5], [GOOD_HISTOGRAM]]]}).encode())
    with pytest.raises(ValueError, match="malformed otel-kit snapshot"):
        decode(json.dumps(document).encode())


# --- participants sharing a directory ----------------------------------------------------


def test_one_scrape_shows_every_process(make: type[Participant]) -> None:
    a, b = make(), make()
    for _ in range(3):
        a.requests.record(0.05, get("/items/{id}"))
    b.requests.record(0.5, get("/items/{id}"))
    b.requests.record(5, get("/items/{id}", 500))
    a.active.add(1, ("GET", "http"))
    b.active.add(2, ("GET", "http"))
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


def test_the_merge_keeps_each_meters_scope(make: type[Participant]) -> None:
    """Scope labels survive the merge: the same metric name from two meters stays two series
    (summed over processes per meter), as in one process."""
    a, b = make(), make()
    for participant, jobs in ((a, 1), (b, 2)):
        participant.provider.get_meter("billing", "2.0").create_counter("jobs").add(jobs)
        participant.provider.get_meter("mailer").create_counter("jobs").add(10 * jobs)
    participant_text = a.text()
    found = {
        (s["otel_scope_name"], s.get("otel_scope_version")): value(
            participant_text, "jobs_total", **s
        )
        for s in series(participant_text, "jobs_total", scope=True)
    }
    assert found == {("billing", "2.0"): 3, ("mailer", None): 30}
    b.requests.record(0.05, get("/a"))  # otel-kit's own instruments: its scope
    scopes = {
        (s["otel_scope_name"], s["otel_scope_version"]) for s in series(a.text(), COUNT, scope=True)
    }
    assert scopes == {("otel_kit", "test")}


def test_a_process_that_exits_keeps_its_counts_not_its_gauges(
    make: type[Participant], directory: Path
) -> None:
    a, b = make(), make()
    a.requests.record(0.05, get("/a"))
    b.requests.record(0.05, get("/b"))
    b.requests.record(0.05, get("/b"))
    a.active.add(1, ("GET", "http"))
    b.active.add(2, ("GET", "http"))
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


LEFT = {(SCOPE, "http.server.request.duration"): MetricPoints("histogram", "s", "", {
    (("http.request.method", "GET"),): HistogramPoint(BOUNDS, [2, 0, 0], 0.1, 0.05, 0.05)
})}  # fmt: skip
LEFT_TOKEN = "0123456789ab"


class Crash(Exception):
    """A process dying between writing the archive and removing what it folded."""


def crash_while_folding(a: Participant, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def dies(path: object) -> None:
        raise Crash

    with monkeypatch.context() as patch, view.directory_lock(directory, 1.0):
        patch.setattr(view, "unlink", dies)
        with contextlib.suppress(Crash):
            view._gather(directory, a.mp._token, set(), 2000)


@pytest.mark.parametrize(
    "steps",
    [
        steps
        for length in range(1, 5)
        for steps in itertools.product(("scrape", "compact", "crash"), repeat=length)
    ],
    ids="-".join,
)
def test_folded_processes_are_counted_once_whatever_the_interleaving(
    make: type[Participant],
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    steps: tuple[str, ...],
) -> None:
    """What an exited process left (a snapshot, no socket), then every order of scrapes, the
    background compaction and folds that crash before removing the file: counted exactly
    once, at every scrape and at the end, and its file is gone."""
    a = make()
    leave(directory / f"{LEFT_TOKEN}.json", encode(LEFT))
    for step in steps:
        if step == "scrape":
            assert value(a.text(), COUNT) == 2
        elif step == "compact":
            view.compact(directory, a.mp._token, 2000)
        else:
            crash_while_folding(a, directory, monkeypatch)
    assert value(a.text(), COUNT) == 2
    assert not (directory / f"{LEFT_TOKEN}.json").exists()
    assert value(a.text(), COUNT) == 2


def test_a_scrape_decodes_again_only_the_files_that_changed(
    make: type[Participant], directory: Path
) -> None:
    """The files a scrape decoded are kept with their bytes: an unchanged one (the archive
    between folds, the snapshot of a process that recorded nothing since) is not decoded
    again, and merging never changes what was decoded; a changed one is decoded again."""
    a, b = make(), make()
    b.requests.record(0.05, get("/b"))
    leave(directory / f"{LEFT_TOKEN}.json", encode(LEFT))  # an ended process's: folded
    assert value(a.text(), COUNT) == 3
    assert value(a.text(), COUNT) == 3  # the first scrape wrote the archive, this one read it

    def decoded(name: str) -> Snapshot:
        return a.mp._decoded[str(directory / name)][1][0]

    archive, of_b = decoded("archive.json"), decoded(f"{b.mp._token}.json")
    archived = encode(archive)
    assert value(a.text(), COUNT) == 3
    assert value(a.text(), COUNT) == 3
    assert decoded("archive.json") is archive
    assert decoded(f"{b.mp._token}.json") is of_b
    assert encode(archive) == archived
    b.requests.record(0.05, get("/b"))
    assert value(a.text(), COUNT) == 4
    assert decoded(f"{b.mp._token}.json") is not of_b
    assert decoded("archive.json") is archive


def test_a_live_process_whose_socket_vanished_counts_once(
    make: type[Participant], directory: Path
) -> None:
    """A /tmp cleaner removed a live process's socket: scrapes take it for dead and fold its
    snapshot; it notices, rejoins under a new token and counts on from what was folded (once
    folded again and again, counters grew with no traffic: 40 -> 100 in 27 s)."""
    a, b = make(), make()
    b.requests.record(0.05, get("/b"))
    b.requests.record(0.05, get("/b"))
    assert value(a.text(), COUNT) == 2
    old = b.mp._token
    (directory / f"{old}.sock").unlink()
    for _ in range(3):  # scrapes fold it; its periodic snapshots go on meanwhile
        assert value(a.text(), COUNT) == 2
        b.mp.write_snapshot()
    assert b.mp._token != old
    b.requests.record(0.05, get("/b"))
    for text in (a.text(), b.text(), a.text()):
        assert value(text, COUNT, http_route="/b") == 3
    assert not list(directory.glob(f"{old}.*"))


def test_a_bad_snapshot_is_set_aside_once(
    make: type[Participant], directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Valid JSON that is no snapshot (wrong types, bucket counts that do not match the
    bounds), a file too big, a bad archive: each is set aside with one warning; scrapes go
    on with the rest (a bad snapshot folded into the archive used to fail every scrape)."""
    a = make()
    a.requests.record(0.05, get("/a"))
    good = encode(LEFT)
    leave(directory / "aaaaaaaaaaaa.json", good.replace(b"[2,0,0]", b"[2,0]"))
    leave(directory / "bbbbbbbbbbbb.json", good.replace(b"0.1,0.05", b'"x",0.05'))
    leave(directory / "cccccccccccc.json", b'{"format": 1, "metrics": [[1, 2]]}')
    leave(directory / "dddddddddddd.json", good)  # fine: counted
    with caplog.at_level(logging.WARNING, "otel_kit"):
        assert value(a.text(), COUNT) == 3
        assert value(a.text(), COUNT) == 3
    bad = sorted(p.name for p in directory.glob("*.bad"))
    assert bad == [f"{t * 12}.json.bad" for t in "abc"]
    assert len([r for r in caplog.records if "set aside" in r.getMessage()]) == 3
    archive = directory / "archive.json"
    archive.write_bytes(archive.read_bytes().replace(b'"format":1', b'"format":1,"folded":7'))
    assert value(a.text(), COUNT) == 3  # a bad list of folded tokens is no list
    archive.write_bytes(b"[]")  # no archive: what it held is lost, scrapes go on
    assert value(a.text(), COUNT) == 1
    assert (directory / "archive.json.bad").exists()


def test_a_huge_snapshot_is_not_read(
    make: type[Participant], directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(view, "MAX_SNAPSHOT_BYTES", 4096)
    a = make()
    points = {(("k", str(i)),): 1 for i in range(400)}
    huge = encode({(SCOPE, "app.jobs"): MetricPoints("counter", "", "", points)})
    assert len(huge) > 4096
    leave(directory / "eeeeeeeeeeee.json", huge)
    assert "app_jobs" not in a.text()
    assert (directory / "eeeeeeeeeeee.json.bad").exists()


def test_the_cardinality_limit_applies_to_merged_data(make: type[Participant]) -> None:
    """Each of 10 processes (or recycled workers, in the archive) within the limit of 3
    routes, 10 routes together: the merge keeps 3 and puts the rest in the overflow series,
    as one process does (ten recycled workers once left 1,001 series with a limit of 100)."""
    a = make(limit=3)
    for i in range(10):
        worker = make(limit=3)
        worker.requests.record(0.05, get(f"/r{i}"))
        worker.requests.record(0.05, get(f"/r{i}"))
        if i % 2:
            worker.mp.close()  # half of them ended: in the archive
    text = a.text()
    counts = series(text, COUNT)
    assert len(counts) == 4
    assert {s.get("otel_metric_overflow") for s in counts} == {None, "true"}
    assert value(text, COUNT) == 20
    assert value(text, COUNT, otel_metric_overflow="true") == 14


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of 256 KiB (tmpfs), to fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_degrades_to_the_last_data(small_disk: Path) -> None:
    """No space left: scrapes still answer with every count (the scraped process's own from
    memory, the others' last snapshots), nothing is folded away unwritten, and once space is
    back the view is exact again."""
    directory = small_disk / "mp"
    a, b, c = Participant(directory), Participant(directory), Participant(directory)
    try:
        a.requests.record(0.05, get("/a"))
        b.requests.record(0.05, get("/b"))
        c.requests.record(0.05, get("/c"))
        assert value(a.text(), COUNT) == 3
        filler = small_disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as file:
            while True:
                file.write(b"x" * 4096)
                file.flush()
        c.close()  # its final snapshot was written before; its socket is gone
        a.requests.record(0.05, get("/a"))
        b.requests.record(0.05, get("/b"))
        for _ in range(2):
            assert value(a.text(), COUNT, http_route="/a") == 2  # from memory
            assert value(a.text(), COUNT, http_route="/c") == 1  # not folded: no archive
            assert value(a.text(), COUNT) == 4  # b: its last file, from before the disk filled
        filler.unlink()
        deadline = time.monotonic() + 10
        while value(a.text(), COUNT) != 5:
            assert time.monotonic() < deadline, a.text()
            time.sleep(0.05)
        assert value(b.text(), COUNT) == 5
    finally:
        for participant in (a, b, c):
            participant.close()


def test_unanswered_processes_are_waited_for_a_bounded_time(
    make: type[Participant], directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live process that does not answer (stopped, stuck): its last snapshot is used."""
    monkeypatch.setattr(view, "SCRAPE_WAIT", 0.2)
    a = make()
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stuck.bind(str(directory / "ba5eba11ba5e.sock"))
    left = {
        (SCOPE, "app.jobs"): metric("counter", a=4),
        (SCOPE, "app.queue"): metric("updown", a=3),
    }
    leave(directory / "ba5eba11ba5e.json", encode(left))
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
    a.active.add(1, ("GET", "http"))
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
    mp = Multiprocess(
        sys.argv[1], reader, resource, keep_instance_id=False, cardinality_limit=2000,
        handle_sigterm=True,
    )
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
    jobs = decode(snapshot.read_bytes())[0][(("app", "", "", ()), "jobs")]  # the meter's scope
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


def test_runtime_metrics_are_per_worker_and_numbers_are_reused(
    make: type[Participant], directory: Path
) -> None:
    """Each process takes the lowest free worker number; its runtime metrics carry it, the
    rest merges as before; an ended process's number goes to the next one, so recycled workers
    add no series."""
    a, b = make(), make()
    assert (a.mp._worker, b.mp._worker) == (0, 1)
    for participant, rss in ((a, 100), (b, 250)):
        participant.meter.create_observable_up_down_counter(
            "process.memory.usage",
            [lambda options, rss=rss: [Observation(rss)]],
            unit="By",
        )
        participant.requests.record(0.05, get("/a"))
    text = a.text()
    assert {(s["worker"], value(text, "process_memory_usage_bytes", **s)) for s in
            series(text, "process_memory_usage_bytes")} == {("0", 100), ("1", 250)}  # fmt: skip
    assert series(text, COUNT) == [{"http_request_method": "GET", "http_route": "/a",
                                    "http_response_status_code": "200", "url_scheme": "http",
                                    "network_protocol_version": "1.1"}]  # fmt: skip
    b.mp.close()
    assert make().mp._worker == 1
    assert [s["worker"] for s in series(a.text(), "process_memory_usage_bytes")] == ["0"]
