"""Django without ENGINE or CACHES swaps, in process: the ORM on SQLite and on the real
PostgreSQL (psycopg's integration on too: each statement once), the locmem and the Redis
cache (on the real redis-server: counted once, as the CACHES alias), and the route templates
(include() prefixes, re_path, a DRF router) through the WSGI middleware."""

from __future__ import annotations

import os
import random
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")
pytest.importorskip("rest_framework")

import django
import httpx
from django.db import IntegrityError, connections, transaction

import otel_kit
from otel_kit import _support
from tests.exposition import samples, series
from tests.handles import MakeHandle
from tests.integration.otel_kit_run import RUN_CLI, VENV_BIN
from tests.integration.processes import free_port, server

pytestmark = pytest.mark.integration

DB = "db_client_operation_duration_seconds_count"
CACHE = "cache_requests_total"
HTTP = "http_server_request_duration_seconds_count"
WAIT_S = 10  # the deadline of every wait on the server


def counts(text: str, name: str, *keys: str) -> dict[tuple[str | None, ...], float]:
    """`keys` label values -> the sample's value, for every series of `name`."""
    out: dict[tuple[str | None, ...], float] = {}
    for (found, labels), count in samples(text).items():
        if found == name:
            values = dict(labels)
            key = tuple(values.get(k) for k in keys)
            out[key] = out.get(key, 0) + count
    return out


@pytest.fixture(scope="module")
def site(postgres_dsn: str, redis_server: int, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test project, set up once in this process; returns the PostgreSQL alias."""
    sqlite = tmp_path_factory.mktemp("django") / "site.sqlite3"
    os.environ["DJANGO_SITE_SQLITE"] = str(sqlite)
    os.environ["DJANGO_SITE_POSTGRES"] = postgres_dsn
    os.environ["DJANGO_SITE_REDIS"] = f"redis://127.0.0.1:{redis_server}/3"
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.integration.apps.django_site.settings"
    django.setup()
    from tests.integration.apps.django_site.shop.models import Item

    with otel_kit.not_measured():
        for alias in ("default", "pg"):
            with connections[alias].schema_editor() as editor:
                editor.execute('DROP TABLE IF EXISTS "shop_item"')
                editor.create_model(Item)
            connections[alias].ensure_connection()  # its set-up statements are not the test's
    return "pg"


@pytest.fixture
def items(site: str) -> Iterator[Any]:
    from tests.integration.apps.django_site.shop.models import Item

    yield Item
    with otel_kit.not_measured():
        for alias in ("default", site):
            Item.objects.using(alias).all().delete()


def orm_workload(item: Any, alias: str) -> None:
    objects = item.objects.using(alias)
    objects.create(name="a")  # INSERT
    assert objects.filter(name="a").count() == 1  # SELECT
    with transaction.atomic(using=alias):
        objects.create(name="b")  # INSERT
        with transaction.atomic(using=alias):  # SAVEPOINT, RELEASE
            objects.filter(name="b").update(price=2)  # UPDATE
    # COMMIT
    with pytest.raises(ValueError), transaction.atomic(using=alias):
        objects.create(name="c")  # INSERT, then ROLLBACK
        raise ValueError("the block fails")
    with pytest.raises(IntegrityError):
        objects.create(name="a")  # a failed INSERT
    objects.filter(name="b").delete()  # DELETE, in a transaction of Django's: COMMIT
    with otel_kit.not_measured():
        assert objects.count() == 1


def test_orm_sqlite(make_handle: MakeHandle, items: Any) -> None:
    handle = make_handle()
    orm_workload(items, "default")
    text = handle.render().decode()
    found = counts(text, DB, "db_system_name", "db_namespace", "db_operation_name", "error_type")
    assert found == {
        ("sqlite", "site.sqlite3", "INSERT", None): 3,
        ("sqlite", "site.sqlite3", "INSERT", "sqlite3.IntegrityError"): 1,
        ("sqlite", "site.sqlite3", "SELECT", None): 1,
        ("sqlite", "site.sqlite3", "BEGIN", None): 3,  # Django sends SQLite's BEGIN itself
        ("sqlite", "site.sqlite3", "SAVEPOINT", None): 1,
        ("sqlite", "site.sqlite3", "UPDATE", None): 1,
        ("sqlite", "site.sqlite3", "RELEASE", None): 1,
        ("sqlite", "site.sqlite3", "COMMIT", None): 2,
        ("sqlite", "site.sqlite3", "ROLLBACK", None): 1,
        ("sqlite", "site.sqlite3", "DELETE", None): 1,
    }
    assert 'server_address="' not in text


def test_orm_postgres_counted_once(make_handle: MakeHandle, items: Any, site: str) -> None:
    handle = make_handle()  # psycopg's integration is on too
    orm_workload(items, site)
    text = handle.render().decode()
    found = counts(
        text,
        DB,
        "db_system_name",
        "db_namespace",
        "server_address",
        "db_operation_name",
        "error_type",
        "db_response_status_code",
    )
    port = connections[site].settings_dict["PORT"]
    where = ("postgresql", "otel_kit", "127.0.0.1")
    assert found == {
        (*where, "INSERT", None, None): 3,
        (*where, "INSERT", "psycopg.errors.UniqueViolation", "23505"): 1,
        (*where, "SELECT", None, None): 1,
        (*where, "SAVEPOINT", None, None): 1,
        (*where, "UPDATE", None, None): 1,
        (*where, "RELEASE", None, None): 1,
        (*where, "COMMIT", None, None): 2,  # psycopg's implicit BEGINs: part of a statement
        (*where, "ROLLBACK", None, None): 1,
        (*where, "DELETE", None, None): 1,
    }
    assert set(counts(text, DB, "server_port")) == {(port,)}


def test_a_metrics_failure_never_reaches_the_application(
    make_handle: MakeHandle,
    items: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from django.core.cache import caches

    import otel_kit._instrumentation.django as instrumentation
    import otel_kit._instrumentation.django_cache as cache_instrumentation

    def broken(*args: object) -> str:
        raise RuntimeError("broken")

    handle = make_handle()
    monkeypatch.setattr(instrumentation, "_target", broken)
    monkeypatch.setattr(cache_instrumentation, "_alias", broken)
    monkeypatch.setattr(_support, "_failures", _support.LogOnce())  # logged once per process
    orm_workload(items, "default")
    cache_workload(caches["default"])
    failures = [r.getMessage() for r in caplog.records if "Django" in r.getMessage()]
    assert failures == [
        "otel-kit: recording Django ORM metrics failed; the application is unaffected",
        "otel-kit: recording Django cache metrics failed; the application is unaffected",
    ]
    text = handle.render().decode()
    assert counts(text, DB) == {} and counts(text, CACHE) == {}


def cache_workload(cache: Any) -> None:
    cache.clear()
    assert cache.get("k") is None  # miss
    cache.set("k", "v")
    cache.set("none", None)
    assert cache.get("k") == "v"  # hit
    assert cache.get("none", "default") is None  # hit: present, its value None
    assert cache.get("absent", "default") == "default"  # miss
    assert cache.get_many(["k", "none", "x", "y"]) == {"k": "v", "none": None}  # 2 hits, 2 misses
    assert cache.get_or_set("new", "made") == "made"  # miss (its set and re-read: no lookups)
    assert cache.get_or_set("k", "other") == "v"  # hit
    assert cache.has_key("k")  # no lookup
    with otel_kit.not_measured():
        assert cache.get("k") == "v"


def test_locmem_cache(make_handle: MakeHandle, site: str) -> None:
    from django.core.cache import caches

    handle = make_handle()
    cache_workload(caches["default"])
    found = counts(handle.render().decode(), CACHE, "cache_name", "cache_result")
    assert found == {("default", "hit"): 5, ("default", "miss"): 5}


def test_redis_cache_counted_once(make_handle: MakeHandle, site: str) -> None:
    from django.core.cache import caches

    handle = make_handle()  # the Redis integration is on too
    cache_workload(caches["shared"])
    text = handle.render().decode()
    assert counts(text, CACHE, "cache_name", "cache_result") == {
        ("shared", "hit"): 5,
        ("shared", "miss"): 5,
    }
    # Its commands are still Redis operations: 4 get(), get_or_set() 1 + 2 (its re-read).
    redis_ops = counts(text, DB, "db_system_name", "db_operation_name")
    assert redis_ops[("redis", "GET")] == 7
    assert redis_ops[("redis", "MGET")] == 1


def test_django_test_client(make_handle: MakeHandle, items: Any) -> None:
    """Django's test client (a handler of its own, no WSGI server): statements, lookups and
    the route each request hands to the HTTP middleware."""
    from django.test import Client

    with otel_kit.not_measured():
        pk = items.objects.create(name="first").pk
    handle = make_handle()
    client = Client(raise_request_exception=False)
    routes = {}
    for path in (f"/shop/items/{pk}/", f"/shop/items/{pk}/", "/shop/api/items/", "/nope/x"):
        response = client.get(path)
        routes[path] = response.wsgi_request.environ.get("otel_kit.route")
    assert routes == {
        f"/shop/items/{pk}/": "/shop/items/<int:pk>/",
        "/shop/api/items/": "/shop/api/items/",
        "/nope/x": None,  # nothing matched: no route
    }
    text = handle.render().decode()
    assert counts(text, CACHE, "cache_name", "cache_result") == {
        ("default", "miss"): 1,
        ("default", "hit"): 1,
    }
    # One SELECT for the item (the second request hit the cache), one for the DRF list.
    assert counts(text, DB, "db_operation_name") == {("SELECT",): 2}


@pytest.fixture
def client(site: str, make_handle: MakeHandle) -> Iterator[tuple[httpx.Client, Any]]:
    from django.core.wsgi import get_wsgi_application

    handle = make_handle()
    app = handle.instrument_app(get_wsgi_application())
    transport = httpx.WSGITransport(app=app, raise_app_exceptions=False)
    with httpx.Client(transport=transport, base_url="http://testserver") as http:
        yield http, handle


def test_route_templates(client: tuple[httpx.Client, Any], items: Any) -> None:
    http, handle = client
    with otel_kit.not_measured():
        first = items.objects.create(name="first")
    for _ in range(3):
        assert http.get(f"/shop/items/{first.pk}/").status_code == 200
    assert http.get("/shop/items/999999/").status_code == 404  # matched: a 404 of the view's
    assert http.get("/shop/api/items/").status_code == 200  # DRF router: list
    assert http.get(f"/shop/api/items/{first.pk}/").status_code == 200  # detail
    assert http.get("/shop/api/items.json").status_code == 200  # format suffix
    assert http.get("/shop/api/").status_code == 200  # the router's API root
    assert http.get("/legacy/2024/").status_code == 200
    assert http.get("/legacy/1999/").status_code == 200
    assert http.get("/nope/secret-path").status_code == 404  # nothing matched: no route
    assert http.get("/shop/fail/").status_code == 500
    found = counts(
        handle.render().decode(),
        HTTP,
        "http_route",
        "http_response_status_code",
        "error_type",
    )
    assert found == {
        ("/shop/items/<int:pk>/", "200", None): 3,
        ("/shop/items/<int:pk>/", "404", None): 1,
        ("/shop/api/items/", "200", None): 1,
        ("/shop/api/items/(?P<pk>[^/.]+)/", "200", None): 1,
        ("/shop/api/items\\.(?P<format>[a-z0-9]+)/?", "200", None): 1,
        ("/shop/api/", "200", None): 1,
        ("/legacy/(?P<year>[0-9]{4})/", "200", None): 2,
        (None, "404", None): 1,
        ("/shop/fail/", "500", "RuntimeError"): 1,
    }


def test_cardinality_attack_bounded(client: tuple[httpx.Client, Any], items: Any) -> None:
    http, handle = client
    rng = random.Random(18)
    paths = ["".join(rng.choices(string.ascii_lowercase, k=12)) for _ in range(150)]
    for name in paths:
        assert http.get(f"/{name}/{name}").status_code == 404
        assert http.get(f"/shop/items/{rng.randrange(10**9)}/").status_code == 404
    text = handle.render().decode()
    assert counts(text, HTTP, "http_route", "http_response_status_code") == {
        (None, "404"): 150,
        ("/shop/items/<int:pk>/", "404"): 150,
    }
    assert not any(name in text for name in paths)


@pytest.fixture
def measured_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Django's handler classes as they were, after the test."""
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    for cls in (WSGIHandler, ASGIHandler):
        monkeypatch.setattr(cls, "__call__", cls.__call__)
        monkeypatch.setattr(cls, "_otel_kit_patched", False, raising=False)
        monkeypatch.delattr(cls, "_otel_kit_patched")


ROUTES = {
    ("/shop/items/<int:pk>/", "200", None): 2,
    ("/shop/api/items/(?P<pk>[^/.]+)/", "200", None): 1,
    ("/legacy/(?P<year>[0-9]{4})/", "200", None): 1,
    (None, "404", None): 1,
    ("/shop/fail/", "500", "RuntimeError"): 1,
}


def route_requests(pk: int) -> list[tuple[str, int]]:
    """The requests whose series are ROUTES: (path, its status code)."""
    return [
        (f"/shop/items/{pk}/", 200),
        (f"/shop/items/{pk}/", 200),
        (f"/shop/api/items/{pk}/", 200),
        ("/legacy/2024/", 200),
        ("/nope/secret-path", 404),
        ("/shop/fail/", 500),
    ]


def test_every_wsgi_handler_measured(
    make_handle: MakeHandle, items: Any, measured_handlers: None
) -> None:
    """`measure_handlers`: what INSTALLED_APPS' "otel_kit.django" does for the project's
    handlers, made before it (here) or after; /metrics is on the app."""
    from django.core.wsgi import get_wsgi_application

    from otel_kit._instrumentation.django import measure_handlers

    application = get_wsgi_application()
    handle = make_handle(metrics_path="/metrics")
    measure_handlers(handle)
    with otel_kit.not_measured():
        pk = items.objects.create(name="first").pk
    transport = httpx.WSGITransport(app=application, raise_app_exceptions=False)
    with httpx.Client(transport=transport, base_url="http://testserver") as http:
        for path, status in route_requests(pk):
            assert http.get(path).status_code == status
        assert http.get("/metrics").status_code == 200  # served on the app, not counted
    text = handle.render().decode()
    assert counts(text, HTTP, "http_route", "http_response_status_code", "error_type") == ROUTES


async def test_every_asgi_handler_measured(
    make_handle: MakeHandle, items: Any, measured_handlers: None
) -> None:
    """Django under ASGI: the same series through the ASGI middleware."""
    from asgiref.sync import sync_to_async
    from django.core.asgi import get_asgi_application

    from otel_kit._instrumentation.django import measure_handlers

    application = get_asgi_application()
    handle = make_handle()
    measure_handlers(handle)
    with otel_kit.not_measured():
        pk = (await sync_to_async(items.objects.create)(name="first")).pk
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        for path, status in route_requests(pk):
            assert (await http.get(path)).status_code == status
    text = handle.render().decode()
    assert counts(text, HTTP, "http_route", "http_response_status_code", "error_type") == ROUTES


def scrape_until(base: str, name: str, total: float, what: str) -> str:
    """The exposition once `name` sums to `total` (a worker records a request when its
    response is closed, just after the client has it); fails at the deadline."""
    deadline = time.monotonic() + WAIT_S
    while True:
        text = httpx.get(base + "/metrics", timeout=10).text
        if sum(counts(text, name).values()) == total:
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not {total} within {WAIT_S} s:\n{text}")
        time.sleep(0.05)


def gunicorn(port: int) -> list[str]:
    """Two sync workers (gunicorn's default worker class) serving the test project."""
    app = "tests.integration.apps.django_site.wsgi:application"
    return ["gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", app]


def test_gunicorn_two_sync_workers(tmp_path: Path, items: Any, site: str) -> None:
    """The project with only "otel_kit.django" added to INSTALLED_APPS, in gunicorn's sync
    workers: one scrape shows both workers' requests, statements and cache lookups."""
    port = free_port()
    env = {"DJANGO_SITE_OTEL_KIT": "1", "OTEL_KIT_MULTIPROC_DIR": str(tmp_path / "metrics")}
    text, processes = served_project(["-m", *gunicorn(port)], port, env, items, site)
    assert processes == 2  # the workers
    assert {s["service_name"] for s in series(text, "target_info")} == {"django-site"}


def test_otel_kit_run_gunicorn(items: Any, site: str) -> None:
    """`otel-kit run gunicorn mysite.wsgi`: the project without a line of otel-kit."""
    port = free_port()
    env = {"PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}  # its gunicorn
    _, processes = served_project([str(RUN_CLI), "run", *gunicorn(port)], port, env, items, site)
    assert processes == 3  # the arbiter too: otel-kit run sets up every process


def test_uvicorn_asgi(tmp_path: Path, items: Any, site: str) -> None:
    """Django under ASGI in a real uvicorn, "otel_kit.django" in INSTALLED_APPS."""
    port = free_port()
    env = {"DJANGO_SITE_OTEL_KIT": "1", "OTEL_KIT_MULTIPROC_DIR": str(tmp_path / "metrics")}
    app = "tests.integration.apps.django_site.asgi:application"
    args = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off", app]
    _, processes = served_project(args, port, env, items, site)
    assert processes == 1


def served_project(
    args: list[str], port: int, env: dict[str, str], items: Any, site: str
) -> tuple[str, int]:
    """Requests to the project served by `python args`: one scrape, every worker's series;
    returns it and how many processes it shows."""
    with otel_kit.not_measured():
        pks = [items.objects.using(site).create(name=f"item-{i}").pk for i in range(3)]
    from django.core.cache import caches

    caches["shared"].clear()
    rng = random.Random(18)
    attack = ["".join(rng.choices(string.ascii_lowercase, k=12)) for _ in range(100)]
    with server(args, port, env=env) as base, httpx.Client(base_url=base, timeout=10) as http:
        for _ in range(4):  # the first of each item misses the Redis cache: 3 SELECTs
            for pk in pks:
                assert http.get(f"/shop/shared/{pk}/").status_code == 200
        assert http.get("/shop/api/items/").status_code == 200
        assert http.get("/legacy/2024/").status_code == 200
        assert http.get("/shop/fail/").status_code == 500
        for name in attack:
            assert http.get(f"/{name}").status_code == 404
            assert http.get(f"/shop/shared/{rng.randrange(10**6, 10**9)}/").status_code == 404
        text = scrape_until(base, HTTP, 12 + 3 + 200, "requests")
        pids = {s["worker"] for s in series(text, "process_memory_usage_bytes")}
    assert counts(text, HTTP, "http_route", "http_response_status_code", "error_type") == {
        ("/shop/shared/<int:pk>/", "200", None): 12,
        ("/shop/shared/<int:pk>/", "404", None): 100,
        ("/shop/api/items/", "200", None): 1,
        ("/legacy/(?P<year>[0-9]{4})/", "200", None): 1,
        ("/shop/fail/", "500", "RuntimeError"): 1,
        (None, "404", None): 100,
    }
    assert counts(text, CACHE, "cache_name", "cache_result") == {
        ("shared", "hit"): 9,
        ("shared", "miss"): 3 + 100,
    }
    selects = counts(text, DB, "db_system_name", "db_operation_name", "error_type")
    # Each miss's SELECT once (psycopg's integration is on too); a connection per request.
    assert selects[("postgresql", "SELECT", None)] == 3 + 100
    assert selects[("sqlite", "SELECT", None)] == 1  # the DRF list
    assert not any(name in text for name in attack)
    return text, len(pids)
