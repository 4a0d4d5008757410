"""The test project under a WSGI server (gunicorn), measured by otel-kit."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.apps.django_site.settings")

from django.core.wsgi import get_wsgi_application

from otel_kit import setup_metrics

application = setup_metrics().instrument_app(get_wsgi_application())
