"""Reads on dead letters. Never write."""
from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet

from dlq.errors import NotFound
from dlq.models import DeadLetter

LIST_DEFERRED = ("traceback", "raw_body", "attempts", "headers", "options")


def dead_letter_list(*, filters: dict[str, Any] | None = None) -> QuerySet[DeadLetter]:
    """Dead letters, newest failure first, large columns deferred."""
    qs = DeadLetter.objects.defer(*LIST_DEFERRED).order_by("-last_failed_at", "-id")
    for key in ("status", "task_id", "task_name", "exception_type", "reason", "queue", "fingerprint"):
        value = (filters or {}).get(key)
        if value:
            qs = qs.filter(**{key: value})
    return qs


def dead_letter_get(*, id: int) -> DeadLetter:
    row = DeadLetter.objects.filter(pk=id).first()
    if row is None:
        raise NotFound(f"dead letter {id} does not exist")
    return row


def dead_letter_counts() -> dict[str, dict[str, int]]:
    by_status = dict(DeadLetter.objects.values_list("status").annotate(n=Count("id")).order_by())
    by_reason = dict(DeadLetter.objects.values_list("reason").annotate(n=Count("id")).order_by())
    return {"by_status": by_status, "by_reason": by_reason}
