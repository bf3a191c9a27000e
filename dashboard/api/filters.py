"""Query-parameter filters of the dead-letter list (django-filter, so the OpenAPI schema
documents them); the filtering itself is ``dlq.selectors.dead_letter_filter``."""
from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet

from dlq.models import DeadLetter, DeadLetterStatus, DeathReason
from dlq.selectors import FILTER_KEYS, clean_filters, dead_letter_filter


class DeadLetterFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DeadLetterStatus.choices, method="noop")
    task_id = django_filters.CharFilter(method="noop")
    task_name = django_filters.CharFilter(method="noop")
    exception_type = django_filters.CharFilter(method="noop")
    reason = django_filters.ChoiceFilter(choices=DeathReason.choices, method="noop")
    queue = django_filters.CharFilter(method="noop")
    fingerprint = django_filters.CharFilter(method="noop")
    root_id = django_filters.CharFilter(method="noop", help_text="Workflow: every dead letter of one task tree.")
    parent_id = django_filters.CharFilter(method="noop")
    group_id = django_filters.CharFilter(method="noop", help_text="Workflow: a group or chord header.")
    failed_after = django_filters.IsoDateTimeFilter(method="noop")
    failed_before = django_filters.IsoDateTimeFilter(method="noop")
    q = django_filters.CharFilter(method="noop", help_text="Full text (websearch syntax) over message, traceback, args.")

    class Meta:
        model = DeadLetter
        fields: list[str] = []

    def noop(self, queryset: QuerySet[DeadLetter], name: str, value: Any) -> QuerySet[DeadLetter]:
        return queryset

    def filter_queryset(self, queryset: QuerySet[DeadLetter]) -> QuerySet[DeadLetter]:
        raw = {key: self.data.get(key) for key in FILTER_KEYS if self.data.get(key) not in (None, "")}
        return dead_letter_filter(queryset, clean_filters(raw))


def filters_from_query(params: Any) -> dict[str, Any]:
    return {key: params.get(key) for key in FILTER_KEYS if params.get(key) not in (None, "")}
