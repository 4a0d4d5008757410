"""Settings of the test project; the databases and the Redis cache from the environment."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.integration.apps.django_site.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "rest_framework",
    "tests.integration.apps.django_site.shop",
]
if os.environ.get("DJANGO_SITE_OTEL_KIT"):  # the one line a project adds
    INSTALLED_APPS.append("otel_kit.django")
    OTEL_KIT = {"service_name": "django-site"}  # setup_metrics()' keyword arguments
MIDDLEWARE: list[str] = []
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_SITE_SQLITE", "/tmp/otel-kit-django-site.sqlite3"),
    }
}
_postgres = os.environ.get("DJANGO_SITE_POSTGRES")
if _postgres:  # postgresql://user@host:port/name
    _url = urlsplit(_postgres)
    DATABASES["pg"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username or "",
        "PASSWORD": _url.password or "",
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
        # The session starts in UTC: Django then sends no `SELECT set_config('TimeZone', ...)`
        # on each new connection (counted by the psycopg integration, not Django's).
        "OPTIONS": {"options": "-c TimeZone=UTC"},
    }

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "site"}
}
_redis = os.environ.get("DJANGO_SITE_REDIS")
if _redis:
    CACHES["shared"] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _redis,
    }
