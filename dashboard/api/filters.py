"""The dead-letter list's filters in the API: ``dlq.filters.DeadLetterFilterSet`` through
django-filter's DRF backend, so that the OpenAPI schema documents every filter, with the
platform's answer to a bad value: 400 ``invalid_filter`` and one message per field (DRF's
backend would answer ``invalid``)."""
from __future__ import annotations

from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend  # type: ignore[import-untyped]  # no type information
from rest_framework.request import Request
from rest_framework.views import APIView

from dlq.filters import DeadLetterFilterSet
from dlq.models import DeadLetter


class DeadLetterFilterBackend(DjangoFilterBackend):  # type: ignore[misc]  # an untyped base class
    def filter_queryset(self, request: Request, queryset: QuerySet[DeadLetter], view: APIView) -> QuerySet[DeadLetter]:
        filterset: DeadLetterFilterSet | None = self.get_filterset(request, queryset, view)
        return queryset if filterset is None else filterset.filtered()
