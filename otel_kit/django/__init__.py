"""Django: metrics for a whole project from one line in its settings.

    INSTALLED_APPS = [..., "otel_kit.django"]

At start-up (its `AppConfig.ready()`) this sets up metrics as `setup_metrics()` does, with the
keyword arguments in the setting `OTEL_KIT` (a dict, optional; environment variables as
always), and measures every request of the project's WSGI and ASGI handlers: `/metrics` on
the app (unless a metrics port is configured), `http.route` the URL pattern
(`resolver_match.route`), the ORM's statements and the caches' hits and misses, without
changing `ENGINE`, `CACHES` or `MIDDLEWARE`. Under `otel-kit run` the run's setup is used.
"""

from __future__ import annotations

__all__: list[str] = []
