"""`setup_metrics()` and the handle it returns."""

from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import CollectorRegistry

from otel_kit import catalogue
from otel_kit._instrumentation import INTEGRATIONS, TRIGGERS, Integration
from otel_kit._instrumentation._context import IntegrationContext, instrument_all
from otel_kit._instrumentation._import_hook import PostImportHook
from otel_kit._instrumentation.asgi import ASGIApp, MetricsMiddleware, disable_fastapi_metrics
from otel_kit._instrumentation.wsgi import WSGIMetricsMiddleware, is_flask
from otel_kit._instruments import FastHistogram, FastSum
from otel_kit._pipeline import Pipeline
from otel_kit.config import SettingKeywords, Settings, load_settings

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's from Python 3.11

__all__ = ["MetricsHandle", "setup_metrics"]

_log = logging.getLogger("otel_kit")


def _imported(name: str) -> bool:
    """Whether module `name` is imported, and not still being imported: psycopg_pool imports
    psycopg first, whose hook runs while psycopg_pool is half made (no classes yet); the hook
    of psycopg_pool itself comes once it is complete (passed as `imported`)."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return module is not None and not getattr(spec, "_initializing", False)


class MetricsHandle:
    """What `setup_metrics()` built. `shutdown()` flushes push exporters and stops servers."""

    def __init__(
        self, settings: Settings, *, serve_on_app: bool, watch_imports: bool = True
    ) -> None:
        self.settings = settings
        self._pipeline = Pipeline(settings, serve_on_app=serve_on_app)
        self.resource: Resource = self._pipeline.resource
        self.meter_provider: MeterProvider = self._pipeline.meter_provider
        self.registry: CollectorRegistry | None = self._pipeline.registry
        fast, limit = self._pipeline.fast, settings.cardinality_limit
        self._http_duration = fast.histogram(
            catalogue.HTTP_SERVER_REQUEST_DURATION, settings.duration_buckets, limit
        )
        self._http_active: FastSum | None = None  # off: not even an empty metric
        if settings.http_active_requests:
            self._http_active = fast.sum(catalogue.HTTP_SERVER_ACTIVE_REQUESTS, limit)
        # Opt-in; None: the middleware takes no detour for them.
        self._http_body_sizes: tuple[FastHistogram, FastHistogram] | None = None
        if settings.http_body_sizes:
            sizes = catalogue.BODY_SIZE_BUCKETS
            self._http_body_sizes = (
                fast.histogram(catalogue.HTTP_SERVER_REQUEST_BODY_SIZE, sizes, limit),
                fast.histogram(catalogue.HTTP_SERVER_RESPONSE_BODY_SIZE, sizes, limit),
            )
        self._http_first_byte: FastHistogram | None = None
        if settings.http_time_to_first_byte:
            self._http_first_byte = fast.histogram(
                catalogue.HTTP_SERVER_TIME_TO_FIRST_BYTE, settings.duration_buckets, limit
            )
        self._apps: weakref.WeakSet[Any] = weakref.WeakSet()
        self._apps_lock = threading.Lock()  # concurrent calls for one app add one middleware
        self._closed = False
        self._context = IntegrationContext(settings, self.meter_provider, fast)
        self._undo: list[Callable[[], None]] = []
        self._instrumented: set[str] = set()  # names of the integrations set up (or trying)
        self._integrations_lock = threading.Lock()
        # Watching first: a library another thread imports meanwhile is not missed.
        if watch_imports:  # else `otel-kit run`'s own import hook calls instrument_imported
            _watch_imports(self)
        self.instrument_imported()

    @classmethod
    def create(cls, app: Any = None, **settings: Unpack[SettingKeywords]) -> MetricsHandle:
        """A setup of its own, NOT installed globally: the global MeterProvider, the cache
        helpers and later `setup_metrics()` calls do not see it. For tests and for code that
        wants its metrics apart; `setup_metrics()` is this plus the global installation."""
        config = load_settings(settings)
        handle = cls(config, serve_on_app=_serves_on_app(app, config))
        if app is not None:
            handle.instrument_app(app)
        return handle

    @property
    def prometheus_port(self) -> int | None:
        """The port serving the metrics (None: served on the app, by another process, or not
        at all)."""
        return self._pipeline.prometheus_port

    def instrument_app(self, app: Any) -> Any:
        """Add HTTP server metrics (and the metrics endpoint) to an ASGI or WSGI app.

        Starlette, FastAPI and Flask apps are changed in place and returned; any other ASGI
        or WSGI app is returned wrapped, so use the return value:
        `app = handle.instrument_app(app)`.
        """
        with self._apps_lock:
            try:
                if app in self._apps:
                    return app
            except TypeError:  # not weak-referenceable: cannot be remembered, wrap it
                pass
            if is_flask(app):
                self._instrument_flask(app)
                return app
            if _is_wsgi(app):
                return self._wsgi_middleware(app, measure=True) or app
            options = self._middleware_options(app)
            if options is None:
                return app
            if not hasattr(app, "add_middleware"):
                return MetricsMiddleware(app, **options)
            if getattr(app, "middleware_stack", None) is None:
                app.add_middleware(MetricsMiddleware, **options)
            else:  # already started (e.g. from a lifespan handler): wrap the built stack
                app.middleware_stack = MetricsMiddleware(app.middleware_stack, **options)
            self._apps.add(app)
            return app

    def _http_options(self, measure: bool, metrics_app: Any) -> dict[str, Any]:
        """The arguments the ASGI and the WSGI middleware share."""
        return {
            "measure": measure,
            "duration": self._http_duration,
            "active": self._http_active,
            "known_methods": frozenset(self.settings.http_known_methods),
            "metrics_path": self.settings.metrics_path,
            "metrics_app": metrics_app,
            "excluded_urls": self.settings.excluded_urls,
            "body_sizes": self._http_body_sizes,
            "first_byte": self._http_first_byte,
        }

    def _wsgi_middleware(self, app: Any, *, measure: bool) -> WSGIMetricsMiddleware | None:
        """The WSGI middleware around `app`; None when there is nothing to add."""
        metrics_app = self._pipeline.metrics_wsgi_app
        if not measure and metrics_app is None:
            return None
        return WSGIMetricsMiddleware(app, **self._http_options(measure, metrics_app))

    def _instrument_flask(self, app: Any) -> None:
        """Measure a Flask app in place (call with `_apps_lock` held)."""
        measure = "flask" not in self.settings.disabled_instrumentations
        middleware = self._wsgi_middleware(app.wsgi_app, measure=measure)
        if middleware is None:
            return
        from otel_kit._instrumentation.flask import instrument_flask

        hidden = middleware._metrics_path
        if self.settings.metrics_include_default_registry:
            hidden = None  # the app's own prometheus_client metrics are served on otel-kit's
        instrument_flask(app, middleware, hidden_path=hidden)
        self._apps.add(app)

    def _middleware_options(self, app: Any) -> dict[str, Any] | None:
        """MetricsMiddleware's arguments for `app`; None when there is nothing to add."""
        measure = "fastapi" not in self.settings.disabled_instrumentations
        if not measure and self._pipeline.metrics_app is None:
            return None
        options = self._http_options(measure, self._pipeline.metrics_app)
        options["on_shutdown"] = self.meter_provider.force_flush
        if hasattr(app, "add_middleware"):  # Starlette/FastAPI
            if measure:
                disable_fastapi_metrics(app)
            options["fastapi_routes"] = hasattr(app, "_telemetry")
            if not self.settings.metrics_include_default_registry:
                options["routes_of"] = app  # an own route at the metrics path is reported
        return options

    def instrument_imported(self, imported: str | None = None) -> None:
        """Instrument each integration not instrumented yet whose trigger is imported (or that
        has none): at setup, and after the application imported the trigger `imported` (the
        import hook, setup's or `otel-kit run`'s, calls this). Libraries the application has
        not imported stay unimported."""
        while not self._closed:
            # Claimed under the lock, instrumented outside it: instrumenting imports modules,
            # and another thread's import hook may be waiting for this lock while holding the
            # import lock of one of them.
            with self._integrations_lock:
                due = [entry for entry in INTEGRATIONS if self._due(entry, imported)]
                self._instrumented.update(entry.name for entry in due)
            if not due:
                return
            # Instrumenting one may have imported another's library: loop until none is due.
            self._undo.extend(instrument_all(self._context, due))

    def _due(self, entry: Integration, imported: str | None = None) -> bool:
        return entry.name not in self._instrumented and (
            not entry.triggers
            or any(name == imported or _imported(name) for name in entry.triggers)
        )

    def instrument_engine(self, engine: Any) -> Any:
        """Measure one SQLAlchemy engine (sync or async) and return it.

        Only needed with `disabled_instrumentations` containing "sqlalchemy": otherwise every
        engine, created before or after setup, is measured already and this changes nothing.
        """
        from otel_kit._instrumentation import sqlalchemy

        undo = sqlalchemy.instrument_engine(self._context, engine)
        if undo is not None:
            self._undo.append(undo)
        return engine

    def render(self, *, openmetrics: bool = False) -> bytes:
        """The current exposition, as a scrape of the metrics endpoint would return it."""
        if self.registry is None:
            raise RuntimeError("the prometheus exporter is not enabled (OTEL_METRICS_EXPORTER)")
        encode = generate_openmetrics if openmetrics else generate_latest
        return encode(self.registry)

    def shutdown(self) -> None:
        """Flush push exporters, stop the metrics port. Safe to call more than once."""
        global _current
        with _lock:
            if self._closed:
                return
            self._closed = True
            if _current is self:
                _current = None
        with _watch_lock:
            _watching.discard(self)
        for undo in self._undo:
            try:
                undo()
            except Exception:
                _log.exception("otel-kit: removing instrumentation failed")
        self._pipeline.close()


_lock = threading.Lock()
_current: MetricsHandle | None = None

# The handles that instrument an integration when the application imports its library, told by
# one import hook, installed with the first of them and never removed (inert without handles):
# removing a finder while another thread walks sys.meta_path can make that thread skip the next.
_watching: weakref.WeakSet[MetricsHandle] = weakref.WeakSet()
_watch_lock = threading.Lock()
_hook: PostImportHook | None = None


def _watch_imports(handle: MetricsHandle) -> None:
    global _hook
    with _watch_lock:
        _watching.add(handle)
        if _hook is None:
            _hook = PostImportHook(TRIGGERS, _instrument_imported)
            sys.meta_path.insert(0, _hook)


def _instrument_imported(name: str, module: ModuleType) -> None:
    """The hook's call: trigger `name` was just imported; never raises into that import."""
    with _watch_lock:
        handles = list(_watching)
    for handle in handles:
        try:
            handle.instrument_imported(name)
        except Exception:
            _log.exception("otel-kit: instrumenting %s failed", name)


def wrap_built_stack(handle: MetricsHandle, app: Any, stack: ASGIApp) -> ASGIApp:
    """For `otel-kit run`: measure a Starlette app whose middleware stack was just built,
    unless it is measured already (it called `setup_metrics(app)` itself)."""
    if isinstance(stack, MetricsMiddleware) or app in handle._apps:
        return stack
    options = handle._middleware_options(app)
    if options is None:
        return stack
    handle._apps.add(app)
    from starlette.middleware.errors import ServerErrorMiddleware

    if type(stack) is ServerErrorMiddleware:
        # Inside it, where setup_metrics(app) puts the middleware: contrib's FastAPIInstrumentor
        # rebuilds the stack around a ServerErrorMiddleware (it skips the app otherwise), and
        # the request is then measured inside its server span.
        stack.app = MetricsMiddleware(stack.app, **options)
        return stack
    return MetricsMiddleware(stack, **options)


# (handle, its cache.requests counter): found once per setup, not once per lookup.
_cache_memo: tuple[MetricsHandle, FastSum] | None = None


def cache_requests() -> FastSum | None:
    """The installed setup's `cache.requests` counter, for the cache helpers; None before
    `setup_metrics()` and after `shutdown()`."""
    global _cache_memo
    handle = _current
    if handle is None:
        return None
    memo = _cache_memo
    if memo is not None and memo[0] is handle:
        return memo[1]
    # FastInstruments.sum() returns the Redis integration's counter when it made one first.
    counter = handle._context.sum(catalogue.CACHE_REQUESTS)
    _cache_memo = (handle, counter)
    return counter


def _is_wsgi(app: Any) -> bool:
    """Whether `app` is a WSGI callable, `(environ, start_response)`, rather than an ASGI one,
    `async (scope, receive, send)`: told by its signature; one that cannot be read is ASGI,
    as every app was before WSGI apps were measured."""
    if not callable(app):
        return False
    call = app if inspect.isroutine(app) else type(app).__call__
    if inspect.iscoroutinefunction(call):
        return False
    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in positional for p in parameters) == 2


def _serves_on_app(app: Any, config: Settings) -> bool:
    """Whether metrics go on `app`'s metrics path (else on the port, if any); checks `app`."""
    if app is not None and not hasattr(app, "add_middleware") and not is_flask(app):
        raise TypeError(
            "setup_metrics(app) instruments Starlette/FastAPI and Flask apps in place; for "
            "another ASGI or WSGI app use: handle = setup_metrics(); "
            "app = handle.instrument_app(app)"
        )
    return app is not None and config.prometheus_port is None


def _install(config: Settings, *, serve_on_app: bool, watch_imports: bool = True) -> MetricsHandle:
    """Build the handle and set the global MeterProvider; call with `_lock` held."""
    global _current
    handle = _current = MetricsHandle(
        config, serve_on_app=serve_on_app, watch_imports=watch_imports
    )
    metrics.set_meter_provider(handle.meter_provider)
    if metrics.get_meter_provider() is not handle.meter_provider:
        _log.warning(
            "otel-kit: another MeterProvider was already set globally; metrics created "
            "with opentelemetry.metrics.get_meter() go there, not to otel-kit's exporters"
        )
    return handle


def setup_metrics(app: Any = None, **settings: Unpack[SettingKeywords]) -> MetricsHandle:
    """Configure OTel metrics with Prometheus export and instrument `app` (FastAPI, Starlette,
    Flask).

    Settings are keyword arguments named as in `otel_kit.config.Settings`; unset ones come
    from OTEL_KIT_* / OTEL_* environment variables, then defaults. Idempotent: later calls
    return the same handle (and instrument a new `app` passed to them).

    An integration (SQLAlchemy, Redis, httpx, ...) is instrumented when the application has
    imported its library, before this call or after it; setup imports none of them.
    """
    with _lock:
        handle = _current
        if handle is None:
            config = load_settings(settings)
            handle = _install(config, serve_on_app=_serves_on_app(app, config))
        elif settings:
            _warn_ignored(handle.settings, settings)
    if app is not None:
        handle.instrument_app(app)
    return handle


def setup_for_run() -> MetricsHandle | None:
    """The handle `otel-kit run` creates in a process before the application exists: metrics
    are served on every Starlette app built later, or on the configured port. Integrations
    are instrumented as the application imports their libraries, told by the run's own import
    hook (`instrument_imported`).

    None while a setup is under way: this may be called from inside one (an import it makes).
    """
    if not _lock.acquire(blocking=False):
        return _current
    try:
        if _current is not None:
            return _current
        config = load_settings()
        handle = _install(config, serve_on_app=config.prometheus_port is None, watch_imports=False)
        _warn_if_served_nowhere(config)
        return handle
    finally:
        _lock.release()


def _warn_ignored(effective: Settings, given: Mapping[str, object]) -> None:
    """A later setup_metrics() call's settings are dropped: name those that differ (under
    `otel-kit run`, which set the process up before the app, a service_name set in code)."""
    from otel_kit.config import ConfigError, setting_docs

    try:
        asked = load_settings(given)
        names = [name for name in given if getattr(asked, name) != getattr(effective, name)]
    except ConfigError:
        names = list(given)
    if not names:
        return
    docs = {doc.name: doc for doc in setting_docs()}
    secret = {doc.name for doc in docs.values() if doc.secret}
    shown = ", ".join(f"{n}={'***' if n in secret else repr(given[n])}" for n in names)
    if "OTEL_KIT_RUN_PID" not in os.environ:
        _log.warning("otel-kit: setup_metrics() already ran; ignored: %s", shown)
        return
    where = "; ".join(
        f"--{n.replace('_', '-')} or {' / '.join(docs[n].env)}" for n in names if n in docs
    )
    _log.warning(
        "otel-kit: setup_metrics(%s) ignored: otel-kit run set this process up before the "
        "application; give them to otel-kit run instead: %s",
        shown,
        where,
    )


# Imported by a process that will build an ASGI app (the app's own modules, or its server).
_APP_MODULES = ("starlette", "flask", "uvicorn", "gunicorn", "hypercorn", "granian", "daphne")


def _warn_if_served_nowhere(config: Settings) -> None:
    """Under `otel-kit run`, a process with no app and no port (an arq worker, alembic) would
    record metrics and serve them nowhere without a word: say so once, and how to serve."""
    pushes = any(name != "prometheus" for name in config.metrics_exporter)
    if config.prometheus_port is not None or pushes or "prometheus" not in config.metrics_exporter:
        return
    if any(name in sys.modules for name in _APP_MODULES):
        return
    _log.warning(
        "otel-kit: this process (pid %d, %s) serves no metrics: it has imported no "
        "Starlette/FastAPI app and has no metrics port, so what it records reaches a scrape "
        "only through another process of this otel-kit run that serves one. To serve them "
        "here give it a port (--prometheus-port or OTEL_EXPORTER_PROMETHEUS_PORT), or push "
        "them (--metrics-exporter otlp)",
        os.getpid(),
        " ".join(sys.argv) or sys.executable,
    )
