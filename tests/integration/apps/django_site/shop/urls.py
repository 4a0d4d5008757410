from __future__ import annotations

from django.urls import include, path
from rest_framework import routers

from tests.integration.apps.django_site.shop import views

router = routers.DefaultRouter()
router.register("items", views.ItemViewSet)

urlpatterns = [
    path("items/<int:pk>/", views.item_detail),
    path("shared/<int:pk>/", views.shared_item),
    path("create/<str:name>/", views.create_item),
    path("fail/", views.fail),
    path("api/", include(router.urls)),
]
