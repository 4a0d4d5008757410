from __future__ import annotations

from django.core.cache import caches
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import serializers, viewsets

from tests.integration.apps.django_site.shop.models import Item


def item_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One ORM SELECT; the item's name cached in the locmem cache."""
    cache = caches["default"]
    name = cache.get(f"item:{pk}")
    if name is None:
        item = Item.objects.filter(pk=pk).first()
        if item is None:
            return JsonResponse({"error": "no such item"}, status=404)
        name = item.name
        cache.set(f"item:{pk}", name)
    return JsonResponse({"id": pk, "name": name})


def shared_item(request: HttpRequest, pk: int) -> HttpResponse:
    """The same on PostgreSQL and the Redis cache, which every worker process shares."""
    cache = caches["shared"]
    name = cache.get(f"item:{pk}")
    if name is None:
        item = Item.objects.using("pg").filter(pk=pk).first()
        if item is None:
            return JsonResponse({"error": "no such item"}, status=404)
        name = item.name
        cache.set(f"item:{pk}", name)
    return JsonResponse({"id": pk, "name": name})


def create_item(request: HttpRequest, name: str) -> HttpResponse:
    """An INSERT in a transaction (BEGIN implicit, COMMIT counted)."""
    with transaction.atomic():
        item = Item.objects.create(name=name, price=len(name))
    return JsonResponse({"id": item.pk}, status=201)


def fail(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


def legacy(request: HttpRequest, year: str) -> HttpResponse:
    return HttpResponse(year)


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


class ItemSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Item
        fields = ("id", "name", "price")


class ItemViewSet(viewsets.ModelViewSet):  # type: ignore[type-arg]
    queryset = Item.objects.order_by("id")
    serializer_class = ItemSerializer
