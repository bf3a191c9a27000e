"""Reads on dead letters (search, groups, stats). Never write.

Search syntax (``q``): Postgres ``websearch_to_tsquery('simple', q)`` over task name,
exception type and message, traceback, args and kwargs: words are ANDed, ``"quoted
phrases"`` match in order, ``or`` between words, ``-word`` excludes. Any string is valid
input (no syntax errors). The vector is a generated column with a GIN index.
"""
from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta
from typing import Any

from django.contrib.postgres.search import SearchQuery
from django.db.models import BooleanField, Count, Max, Min, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import TruncHour
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dlq.errors import NotFound, ValidationFailed
from dlq.models import Alert, AlertStatus, DeadLetter, DeadLetterEvent, DeadLetterStatus, DeathReason, RedriveJob

LIST_DEFERRED = ("traceback", "raw_body", "raw_arguments", "attempts", "headers", "options", "search")
EXACT_FILTERS = ("status", "task_id", "task_name", "exception_type", "reason", "queue", "fingerprint", "root_id",
                 "parent_id", "group_id")
FILTER_KEYS = (*EXACT_FILTERS, "failed_after", "failed_before", "q")
CHOICES = {"status": set(DeadLetterStatus.values), "reason": set(DeathReason.values)}


def clean_filters(raw: Any) -> dict[str, Any]:
    """Validate a filter mapping (query parameters or a bulk body). Raises ``ValidationFailed``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValidationFailed("filter must be an object", fields={"filter": ["must be an object"]})
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in FILTER_KEYS:
            errors[str(key)[:64]] = [f"unknown filter; known: {', '.join(FILTER_KEYS)}"]
            continue
        if value in (None, ""):
            continue
        if not isinstance(value, str) or len(value) > 1000 or "\x00" in value:
            errors[key] = ["must be a string of at most 1000 characters without NUL"]
            continue
        if key in CHOICES and value not in CHOICES[key]:
            errors[key] = [f"must be one of {', '.join(sorted(CHOICES[key]))}"]
            continue
        if key in ("failed_after", "failed_before"):
            try:
                parsed = parse_datetime(value)
            except ValueError:
                parsed = None
            if parsed is None:
                errors[key] = ["must be an ISO 8601 date-time"]
                continue
            cleaned[key] = parsed if parsed.tzinfo else timezone.make_aware(parsed)
            continue
        cleaned[key] = value
    if errors:
        raise ValidationFailed("invalid filters", code="invalid_filter", fields=errors)
    return cleaned


def dead_letter_filter(qs: QuerySet[DeadLetter], filters: dict[str, Any]) -> QuerySet[DeadLetter]:
    """Apply already-cleaned filters."""
    exact = {key: filters[key] for key in EXACT_FILTERS if key in filters}
    if exact:
        qs = qs.filter(**exact)
    if "failed_after" in filters:
        qs = qs.filter(last_failed_at__gte=filters["failed_after"])
    if "failed_before" in filters:
        qs = qs.filter(last_failed_at__lt=filters["failed_before"])
    if filters.get("q"):
        qs = qs.filter(search=SearchQuery(filters["q"], search_type="websearch", config="simple"))
    return qs


def dead_letter_list(*, filters: dict[str, Any] | None = None) -> QuerySet[DeadLetter]:
    """Dead letters, newest failure first, large columns deferred. ``filters`` are raw
    (validated here)."""
    qs = DeadLetter.objects.defer(*LIST_DEFERRED).order_by("-last_failed_at", "-id")
    return dead_letter_filter(qs, clean_filters(filters))


def _get(qs: QuerySet[Any], id: Any, label: str) -> Any:
    """The row with primary key ``id`` (any input: a path segment, a form value), or NotFound."""
    try:
        pk = int(id)
    except (TypeError, ValueError):
        raise NotFound(f"{label} {str(id)[:64]!r} does not exist") from None
    row = qs.filter(pk=pk).first()
    if row is None:
        raise NotFound(f"{label} {pk} does not exist")
    return row


def dead_letter_get(*, id: Any) -> DeadLetter:
    return _get(DeadLetter.objects.defer("search"), id, "dead letter")


def dead_letter_workflow(row: DeadLetter) -> dict[str, Any]:
    """Its place in a workflow, and what a requeue does to it: a chain continues with its
    next steps, links and errbacks run as before, a chord member rejoins its chord while the
    chord is open (django-celery-results' ``ChordCounter`` exists) and cannot otherwise."""
    options = row.options or {}
    chain = options.get("chain") if isinstance(options.get("chain"), list) else []
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
        from django_celery_results.models import ChordCounter

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


def dead_letter_events(*, dead_letter_id: Any) -> QuerySet[DeadLetterEvent]:
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

def failure_groups(*, filters: dict[str, Any] | None = None, limit: int = 200) -> list[dict[str, Any]]:
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
    return list(rows)


def _status_reason_counts() -> tuple[dict[str, int], dict[str, int]]:
    """Counts by status and by reason, from one grouped query."""
    by_status: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for status, reason, n in DeadLetter.objects.values_list("status", "reason").annotate(n=Count("id")).order_by():
        by_status[status] = by_status.get(status, 0) + n
        by_reason[reason] = by_reason.get(reason, 0) + n
    return by_status, by_reason


def _per_hour(hours: int) -> list[dict[str, Any]]:
    """Dead letters recorded per hour over the last ``hours`` hours (zeros included)."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    since = now - timedelta(hours=hours - 1)
    counted = dict(
        DeadLetter.objects.filter(created_at__gte=since).annotate(hour=TruncHour("created_at"))
        .values_list("hour").annotate(n=Count("id")).order_by()
    )
    return [{"hour": since + timedelta(hours=h), "count": counted.get(since + timedelta(hours=h), 0)} for h in range(hours)]


def dead_letter_stats(*, hours: int = 48) -> dict[str, Any]:
    """The API's ``stats/``: totals by status, reason and task, and per hour."""
    by_status, by_reason = _status_reason_counts()
    by_task = dict(DeadLetter.objects.values_list("task_name").annotate(n=Count("id")).order_by("-n")[:50])
    per_hour = [{"hour": p["hour"].isoformat(), "count": p["count"]} for p in _per_hour(hours)]
    return {"total": sum(by_status.values()), "by_status": by_status, "by_reason": by_reason,
            "by_task": by_task, "per_hour": per_hour}


def redrive_job_list() -> QuerySet[RedriveJob]:
    return RedriveJob.objects.order_by("-created_at", "-id")


def redrive_job_get(*, id: Any) -> RedriveJob:
    return _get(RedriveJob.objects.all(), id, "redrive job")


def alert_list(*, open_only: bool = True) -> QuerySet[Alert]:
    qs = Alert.objects.order_by("-opened_at", "-id")
    return qs.filter(status=AlertStatus.OPEN) if open_only else qs


# --- Ops pages (dashboard) ----------------------------------------------------------------

def dead_letter_overview(*, hours: int = 48, top_tasks: int = 10) -> dict[str, Any]:
    """What the overview page shows, in three queries: counts by status and by reason, the
    tasks with the most ``dead`` rows, and dead letters per hour."""
    by_status, by_reason = _status_reason_counts()
    failing_tasks = list(
        DeadLetter.objects.filter(status=DeadLetterStatus.DEAD).values("task_name")
        .annotate(count=Count("id"), last_seen=Max("last_failed_at")).order_by("-count", "task_name")[:top_tasks]
    )
    return {"total": sum(by_status.values()), "by_status": by_status, "by_reason": by_reason,
            "failing_tasks": failing_tasks, "per_hour": _per_hour(hours)}


def redrive_job_active() -> QuerySet[RedriveJob]:
    """Jobs that are pending or running, newest first."""
    from dlq.models import RedriveJobStatus

    return redrive_job_list().filter(status__in=(RedriveJobStatus.PENDING, RedriveJobStatus.RUNNING))


def periodic_task_list() -> QuerySet[Any]:
    """Beat's schedules (django-celery-beat), with their schedule rows joined (no N+1)."""
    from django_celery_beat.models import PeriodicTask

    return PeriodicTask.objects.select_related("interval", "crontab", "solar", "clocked").order_by("name")


def reprocess_policy_list() -> QuerySet[Any]:
    from dlq.models import ReprocessPolicy

    return ReprocessPolicy.objects.order_by("task_name")


def reprocess_policy_get(*, id: Any) -> Any:
    from dlq.models import ReprocessPolicy

    return _get(ReprocessPolicy.objects.all(), id, "policy")


# --- Audit trail: operator changes (AuditEvent) and dead letters' events, as one list ----------

AUDIT_FILTERS = ("actor", "action", "object_type", "after", "before")


def clean_audit_filters(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationFailed("filters must be an object", fields={"filter": ["must be an object"]})
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in AUDIT_FILTERS or value in (None, ""):
            continue
        if not isinstance(value, str) or len(value) > 255 or "\x00" in value:
            errors[key] = ["must be a string of at most 255 characters without NUL"]
        elif key in ("after", "before"):
            parsed = _parse_when(value)
            if parsed is None:
                errors[key] = ["must be an ISO 8601 date-time"]
            else:
                cleaned[key] = parsed
        else:
            cleaned[key] = value
    if errors:
        raise ValidationFailed("invalid filters", code="invalid_filter", fields=errors)
    return cleaned


def _parse_when(value: str) -> datetime | None:
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else timezone.make_aware(parsed)


def audit_events(*, filters: Any = None, cursor: str | None = None, size: int = 50) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first, keyset-paginated on (at, source, id): ``AuditEvent`` rows and the dead
    letters' own events (``object_type`` ``dead_letter``) in one list. Returns the page and
    the cursor of the next one."""
    from django.db import connection

    from dlq.models import AuditEvent

    cleaned = clean_audit_filters(filters or {})
    position = None
    if cursor:
        try:
            data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            position = (parse_datetime(data["t"]), str(data["s"]), int(data["i"]))
            if position[0] is None:
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error):
            raise ValidationFailed("invalid cursor", code="invalid_cursor", fields={"cursor": ["invalid"]}) from None

    def branch(source: str, table: str, at: str, object_type: str, object_id: str) -> tuple[str, list[Any]]:
        # Each table ordered and limited on its own index, then the two merged: a page costs
        # two index scans whatever the size of either table.
        where, params = [], []
        columns = {"actor": "actor", "action": "action", "object_type": object_type}
        for key, column in columns.items():
            if key in cleaned:
                where.append(f"{column} = %s")
                params.append(cleaned[key])
        if "after" in cleaned:
            where.append(f"{at} >= %s")
            params.append(cleaned["after"])
        if "before" in cleaned:
            where.append(f"{at} < %s")
            params.append(cleaned["before"])
        if position is not None:
            where.append(f"{at} <= %s AND ({at}, '{source}', id) < (%s, %s, %s)")
            params += [position[0], *position]
        sql = (f"(SELECT '{source}' AS source, id, {at} AS at, actor, action, {object_type} AS object_type, "
               f"{object_id} AS object_id, reason, diff FROM {table}"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {at} DESC, id DESC LIMIT %s)")
        return sql, [*params, size + 1]

    audit_sql, audit_params = branch("audit", AuditEvent._meta.db_table, "at", "object_type", "object_id")
    events_sql, events_params = branch("dead_letter", DeadLetterEvent._meta.db_table, "created_at", "'dead_letter'",
                                       "dead_letter_id::text")
    sql = f"{audit_sql} UNION ALL {events_sql} ORDER BY at DESC, source DESC, id DESC LIMIT %s"
    with connection.cursor() as cur:
        cur.execute(sql, [*audit_params, *events_params, size + 1])
        rows = cur.fetchall()
    events = [{"id": f"{source}:{pk}", "at": at, "actor": actor, "action": action, "object_type": object_type,
               "object_id": object_id, "reason": reason, "diff": diff if isinstance(diff, dict) else json.loads(diff)}
              for source, pk, at, actor, action, object_type, object_id, reason, diff in rows[:size]]
    next_cursor = None
    if len(rows) > size:
        source, pk, at = rows[size - 1][0], rows[size - 1][1], rows[size - 1][2]
        raw = json.dumps({"t": at.isoformat(), "s": source, "i": pk})
        next_cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    return events, next_cursor
