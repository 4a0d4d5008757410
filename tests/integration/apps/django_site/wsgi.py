"""The test project's WSGI application, as `startproject` writes it: no otel-kit line (the
settings' INSTALLED_APPS has "otel_kit.django" when DJANGO_SITE_OTEL_KIT is set)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.apps.django_site.settings")

application = get_wsgi_application()
