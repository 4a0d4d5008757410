"""The test project's ASGI application, as `startproject` writes it."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.apps.django_site.settings")

application = get_asgi_application()
