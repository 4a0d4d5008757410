"""The trivial Django project in one module, configured by `wsgi_django_<variant>.py`:
`project(installed_apps, middleware, extra_urls)` returns its WSGI application."""

from __future__ import annotations

from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

urlpatterns: list[Any] = []


def read_item(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse({"id": item_id})


def project(installed_apps: list[str], middleware: list[str], extra_urls: list[Any]) -> Any:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=installed_apps,
        MIDDLEWARE=middleware,
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()
    urlpatterns[:] = [path("items/<int:item_id>", read_item), *extra_urls]
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()
