"""FastSum's lock-free `up`/`down` (active requests): exact under threads, after fork, mixed
with `add`, and within the cardinality limit shared with `add`."""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any

from opentelemetry.sdk.metrics.export import NumberDataPoint

from otel_kit import catalogue
from otel_kit._instruments import FastSum

ACTIVE = catalogue.HTTP_SERVER_ACTIVE_REQUESTS
GET = ("GET", "http")
POST = ("POST", "http")


def values(total: FastSum) -> dict[tuple[Any, ...], Any]:
    out: dict[tuple[Any, ...], Any] = {}
    for point in total.metric(0, 1).data.data_points:
        assert isinstance(point, NumberDataPoint)
        out[tuple(sorted((point.attributes or {}).items()))] = point.value
    return out


def test_up_and_down_from_many_threads_lose_no_step() -> None:
    active = FastSum(ACTIVE, 100, monotonic=False)
    start = threading.Barrier(8)

    def requests(key: tuple[str, str], n: int, leave_open: int) -> None:
        start.wait(10)
        for _ in range(n):
            active.up(key)
        for _ in range(n - leave_open):
            active.down(key)

    threads = [
        threading.Thread(target=requests, args=(GET if i % 2 else POST, 20_000, i))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    get = (("http.request.method", "GET"), ("url.scheme", "http"))
    post = (("http.request.method", "POST"), ("url.scheme", "http"))
    assert values(active) == {get: 1 + 3 + 5 + 7, post: 0 + 2 + 4 + 6}


def test_steps_and_add_sum_into_one_series() -> None:
    active = FastSum(ACTIVE, 100, monotonic=False)
    active.up(GET)
    active.up(GET)
    active.add(-1, GET)
    active.add(5, POST)
    active.down(POST)
    assert values(active) == {
        (("http.request.method", "GET"), ("url.scheme", "http")): 1,
        (("http.request.method", "POST"), ("url.scheme", "http")): 4,
    }


def test_steps_share_the_cardinality_limit_with_add() -> None:
    active = FastSum(ACTIVE, 2, monotonic=False)
    active.add(1, GET)
    active.up(POST)
    active.up(("PUT", "http"))  # a third key: the overflow series
    active.up(("PUT", "http"))
    active.down(("PUT", "http"))
    assert values(active) == {
        (("http.request.method", "GET"), ("url.scheme", "http")): 1,
        (("http.request.method", "POST"), ("url.scheme", "http")): 1,
        (("otel.metric.overflow", True),): 1,
    }


def test_a_forked_child_counts_on_from_the_parents_value() -> None:
    active = FastSum(ACTIVE, 100, monotonic=False)
    active.up(GET)
    active.up(GET)
    with warnings.catch_warnings():  # Python >= 3.12 warns about fork() with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        active.down(GET)
        active.up(POST)
        expected = {
            (("http.request.method", "GET"), ("url.scheme", "http")): 1,
            (("http.request.method", "POST"), ("url.scheme", "http")): 1,
        }
        os._exit(0 if values(active) == expected else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    active.down(GET)
    assert values(active) == {(("http.request.method", "GET"), ("url.scheme", "http")): 1}
