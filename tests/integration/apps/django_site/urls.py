from __future__ import annotations

from django.urls import include, path, re_path

from tests.integration.apps.django_site.shop import views

urlpatterns = [
    path("shop/", include("tests.integration.apps.django_site.shop.urls")),
    re_path(r"^legacy/(?P<year>[0-9]{4})/$", views.legacy),
    path("healthz", views.healthz),
]
