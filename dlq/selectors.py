"""Reads on dead letters (search, groups, stats), jobs, alerts, policies and schedules (the
audit trail's: ``dlq.audit_trail``). Never write.

The dead-letter filters (names, valid values, the query each makes, the full-text search
``q``) are ``dlq.filters.DeadLetterFilterSet``; the functions here take them as a mapping of
raw values (query parameters, a bulk body, a stored job's filters), validate them through
it, and raise ``ValidationFailed`` (``invalid_filter``) for a bad one.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypedDict, TypeVar, cast

from django.db.models import BooleanField, Count, Max, Min, Model, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import TruncHour
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_celery_beat.models import PeriodicTask
from django_celery_results.models import ChordCounter  # type: ignore[attr-defined]  # missing from its stubs

from dlq.filters import DeadLetterFilters, dead_letter_filters_apply, dead_letter_filters_clean
from dlq.models import (
    Alert,
    AlertStatus,
    DeadLetter,
    DeadLetterEvent,
    DeadLetterStatus,
    RedriveJob,
    RedriveJobStatus,
    ReprocessPolicy,
)
from tasks.errors import NotFound, ValidationFailed

LIST_DEFERRED = ("traceback", "raw_body", "raw_arguments", "attempts", "headers", "options", "search")
M = TypeVar("M", bound=Model)


def clean_filters(raw: object) -> DeadLetterFilters:
    """Validate a filter mapping (query parameters or a bulk body). Raises ``ValidationFailed``."""
    return dead_letter_filters_clean(raw)


def dead_letter_filter(qs: QuerySet[DeadLetter], filters: DeadLetterFilters) -> QuerySet[DeadLetter]:
    """Apply already-cleaned filters."""
    return dead_letter_filters_apply(qs, filters)


def dead_letter_list(*, filters: Mapping[str, object] | None = None) -> QuerySet[DeadLetter]:
    """Dead letters, newest failure first, large columns deferred. ``filters`` are raw
    (validated here)."""
    qs = DeadLetter.objects.defer(*LIST_DEFERRED).order_by("-last_failed_at", "-id")
    return dead_letter_filter(qs, clean_filters(filters))


def _get(qs: QuerySet[M], id: object, label: str) -> M:
    """The row with primary key ``id`` (any input: a path segment, a form value), or NotFound."""
    try:
        pk = int(id)  # type: ignore[call-overload]  # any input; what int() refuses is a 404
    except (TypeError, ValueError):
        raise NotFound(f"{label} {str(id)[:64]!r} does not exist") from None
    row = qs.filter(pk=pk).first()
    if row is None:
        raise NotFound(f"{label} {pk} does not exist")
    return row


def dead_letter_get(*, id: object) -> DeadLetter:
    return _get(DeadLetter.objects.defer("search"), id, "dead letter")


class Workflow(TypedDict):
    """A dead letter's place in a workflow (``dead_letter_workflow``)."""

    parts: list[str]
    root_id: str
    parent_id: str
    group_id: str
    next: list[str]
    resumable: bool
    note: str


def dead_letter_workflow(row: DeadLetter) -> Workflow:
    """Its place in a workflow, and what a requeue does to it: a chain continues with its
    next steps, links and errbacks run as before, a chord member rejoins its chord while the
    chord is open (django-celery-results' ``ChordCounter`` exists) and cannot otherwise."""
    options = row.options or {}
    raw_chain = options.get("chain")
    chain: list[Any] = raw_chain if isinstance(raw_chain, list) else []
    parts: list[str] = []
    if chain:
        parts.append("chain")
    if options.get("link") or options.get("link_error"):
        parts.append("callbacks")
    chord = bool(row.group_id and options.get("chord"))
    if row.group_id:
        parts.append("chord" if chord else "group")
    resumable, note = True, ""
    if chord:
        resumable = ChordCounter.objects.filter(group_id=row.group_id).exists()
        note = ("a chord member: its chord is still open, a requeue rejoins it" if resumable else
                "a chord member whose chord has completed with this member failed (its callback got a ChordError): "
                "it cannot be resumed; run the whole workflow again")
    elif chain:
        names = [str(step.get("task")) for step in reversed(chain) if isinstance(step, dict)]
        note = f"a chain step: a requeue runs it and then the rest of the chain ({' → '.join(names)})"
    elif row.group_id:
        note = "a group member: a requeue keeps its group id"
    return {"parts": parts, "root_id": row.root_id, "parent_id": row.parent_id, "group_id": row.group_id,
            "next": [str(step.get("task")) for step in reversed(chain) if isinstance(step, dict)],
            "resumable": resumable, "note": note}


def dead_letter_events(*, dead_letter_id: object) -> QuerySet[DeadLetterEvent]:
    row = dead_letter_get(id=dead_letter_id)
    return DeadLetterEvent.objects.filter(dead_letter_id=row.pk).order_by("-created_at", "-id")


# --- Keyset (cursor) pagination on (last_failed_at, id) descending -----------------------

def encode_cursor(row: DeadLetter, direction: str) -> str:
    raw = json.dumps({"t": row.last_failed_at.isoformat(), "i": row.pk, "d": direction})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        at = parse_datetime(data["t"])
        pk, direction = int(data["i"]), data["d"]
        if at is None or direction not in ("next", "prev"):
            raise ValueError
    except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error):
        raise ValidationFailed("invalid cursor", code="invalid_cursor", fields={"cursor": ["invalid"]}) from None
    return at, pk, direction


def dead_letter_page(qs: QuerySet[DeadLetter], *, cursor: str | None, size: int) -> tuple[list[DeadLetter], str | None, str | None]:
    """One page of ``qs`` (ordered newest first) and the cursors of its neighbours.
    One query, whatever the depth: ``WHERE (last_failed_at, id) < (...)`` on the index."""
    direction = "next"
    if cursor:
        at, pk, direction = decode_cursor(cursor)
        # A row comparison, which Postgres turns into an index range on (last_failed_at, id);
        # the equivalent `a < t OR (a = t AND id < pk)` is a filter over every earlier row,
        # so deep pages got slower with depth.
        table = DeadLetter._meta.db_table
        op = "<" if direction == "next" else ">"
        qs = qs.filter(RawSQL(f'("{table}"."last_failed_at", "{table}"."id") {op} (%s, %s)', (at, pk),
                              output_field=BooleanField()))
        if direction == "prev":
            qs = qs.order_by("last_failed_at", "id")
    rows = list(qs[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    if direction == "prev":
        rows.reverse()
    has_next = more if direction == "next" else bool(cursor)
    has_prev = bool(cursor) if direction == "next" else more
    next_cursor = encode_cursor(rows[-1], "next") if rows and has_next else None
    prev_cursor = encode_cursor(rows[0], "prev") if rows and has_prev else None
    return rows, next_cursor, prev_cursor


# --- Groups and stats ---------------------------------------------------------------------

class FailureGroup(TypedDict):
    fingerprint: str
    task_name: str
    exception_type: str
    sample_message: str
    count: int
    first_seen: datetime
    last_seen: datetime


class HourCount(TypedDict):
    hour: datetime
    count: int


class HourCountText(TypedDict):
    hour: str  # ISO 8601
    count: int


class FailingTask(TypedDict):
    task_name: str
    count: int
    last_seen: datetime


class DeadLetterStats(TypedDict):
    total: int
    by_status: dict[str, int]
    by_reason: dict[str, int]
    by_task: dict[str, int]
    per_hour: list[HourCountText]


class DeadLetterOverview(TypedDict):
    total: int
    by_status: dict[str, int]
    by_reason: dict[str, int]
    failing_tasks: list[FailingTask]
    per_hour: list[HourCount]


def failure_groups(*, filters: Mapping[str, object] | None = None, limit: int = 200) -> list[FailureGroup]:
    """One row per fingerprint, most frequent first."""
    qs = dead_letter_filter(DeadLetter.objects.all(), clean_filters(filters))
    rows = (
        qs.values("fingerprint")
        .annotate(
            task_name=Max("task_name"), exception_type=Max("exception_type"),
            sample_message=Max("exception_message"), count=Count("id"),
            first_seen=Min("first_failed_at"), last_seen=Max("last_failed_at"),
        )
        .order_by("-count", "-last_seen")[:limit]
    )
    return cast(list[FailureGroup], list(rows))  # the keys of values() and annotate() above


def _status_reason_counts() -> tuple[dict[str, int], dict[str, int]]:
    """Counts by status and by reason, from one grouped query."""
    by_status: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for status, reason, n in DeadLetter.objects.values_list("status", "reason").annotate(n=Count("id")).order_by():
        by_status[status] = by_status.get(status, 0) + n
        by_reason[reason] = by_reason.get(reason, 0) + n
    return by_status, by_reason


def _per_hour(hours: int) -> list[HourCount]:
    """Dead letters recorded per hour over the last ``hours`` hours (zeros included)."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    since = now - timedelta(hours=hours - 1)
    counted: dict[datetime, int] = dict(
        DeadLetter.objects.filter(created_at__gte=since).annotate(hour=TruncHour("created_at"))
        .values_list("hour").annotate(n=Count("id")).order_by()
    )
    return [{"hour": since + timedelta(hours=h), "count": counted.get(since + timedelta(hours=h), 0)} for h in range(hours)]


def dead_letter_stats(*, hours: int = 48) -> DeadLetterStats:
    """The API's ``stats/``: totals by status, reason and task, and per hour."""
    by_status, by_reason = _status_reason_counts()
    by_task: dict[str, int] = dict(
        DeadLetter.objects.values_list("task_name").annotate(n=Count("id")).order_by("-n")[:50])
    per_hour: list[HourCountText] = [{"hour": p["hour"].isoformat(), "count": p["count"]} for p in _per_hour(hours)]
    return {"total": sum(by_status.values()), "by_status": by_status, "by_reason": by_reason,
            "by_task": by_task, "per_hour": per_hour}


def redrive_job_list() -> QuerySet[RedriveJob]:
    return RedriveJob.objects.order_by("-created_at", "-id")


def redrive_job_get(*, id: object) -> RedriveJob:
    return _get(RedriveJob.objects.all(), id, "redrive job")


def alert_list(*, open_only: bool = True) -> QuerySet[Alert]:
    qs = Alert.objects.order_by("-opened_at", "-id")
    return qs.filter(status=AlertStatus.OPEN) if open_only else qs


# --- Ops pages (dashboard) ----------------------------------------------------------------

def dead_letter_overview(*, hours: int = 48, top_tasks: int = 10) -> DeadLetterOverview:
    """What the overview page shows, in three queries: counts by status and by reason, the
    tasks with the most ``dead`` rows, and dead letters per hour."""
    by_status, by_reason = _status_reason_counts()
    failing_tasks = cast(list[FailingTask], list(  # the keys of values() and annotate() below
        DeadLetter.objects.filter(status=DeadLetterStatus.DEAD).values("task_name")
        .annotate(count=Count("id"), last_seen=Max("last_failed_at")).order_by("-count", "task_name")[:top_tasks]
    ))
    return {"total": sum(by_status.values()), "by_status": by_status, "by_reason": by_reason,
            "failing_tasks": failing_tasks, "per_hour": _per_hour(hours)}


def redrive_job_active() -> QuerySet[RedriveJob]:
    """Jobs that are pending or running, newest first."""
    return redrive_job_list().filter(status__in=(RedriveJobStatus.PENDING, RedriveJobStatus.RUNNING))


def periodic_task_list() -> QuerySet[PeriodicTask]:
    """Beat's schedules (django-celery-beat), with their schedule rows joined (no N+1)."""
    tasks: QuerySet[PeriodicTask] = PeriodicTask.objects.select_related("interval", "crontab", "solar", "clocked")
    return tasks.order_by("name")


def reprocess_policy_list() -> QuerySet[ReprocessPolicy]:
    return ReprocessPolicy.objects.order_by("task_name")


def reprocess_policy_get(*, id: object) -> ReprocessPolicy:
    return _get(ReprocessPolicy.objects.all(), id, "policy")
