"""The trivial Django project with django-prometheus as its README says: the app, its two
middlewares first and last, its URLs (/metrics)."""

from django.urls import include, path
from wsgi_django import project

app = project(
    ["django_prometheus"],
    [
        "django_prometheus.middleware.PrometheusBeforeMiddleware",
        "django_prometheus.middleware.PrometheusAfterMiddleware",
    ],
    [path("", include("django_prometheus.urls"))],
)
