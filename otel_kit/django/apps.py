"""The Django app `otel_kit.django`: its `ready()` sets up metrics for the project."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["OtelKitConfig"]


class OtelKitConfig(AppConfig):  # type: ignore[misc]  # Django has no type hints
    name = "otel_kit.django"
    label = "otel_kit"
    verbose_name = "otel-kit metrics"

    def ready(self) -> None:
        from django.conf import settings

        from otel_kit._instrumentation.django import setup

        # A bad value raises ConfigError here: the project fails at start, naming the setting.
        setup(**getattr(settings, "OTEL_KIT", {}))
