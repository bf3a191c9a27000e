"""Reads of the audit trail: operator changes (``AuditEvent``) and the dead letters' own
events (``DeadLetterEvent``, ``object_type`` ``dead_letter``) as one list, newest first,
keyset-paginated. Never writes. Served by ``GET /api/v1/audit-events/`` and the audit page.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict

from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dlq.models import AuditEvent, DeadLetterEvent
from tasks.errors import ValidationFailed

AUDIT_FILTERS = ("actor", "action", "object_type", "after", "before")
SQLParam = str | int | datetime | None


class AuditEventRow(TypedDict):
    """One entry of the audit trail: ``id`` is ``audit:<n>`` or ``dead_letter:<n>``."""

    id: str
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    reason: str
    diff: dict[str, Any]  # JSON: {field: [before, after]} or the action's parameters


def clean_audit_filters(raw: object) -> dict[str, str | datetime]:
    if not isinstance(raw, Mapping):
        raise ValidationFailed("filters must be an object", fields={"filter": ["must be an object"]})
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, str | datetime] = {}
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


def audit_events(*, filters: Mapping[str, object] | None = None, cursor: str | None = None,
                 size: int = 50) -> tuple[list[AuditEventRow], str | None]:
    """Newest first, keyset-paginated on (at, source, id): ``AuditEvent`` rows and the dead
    letters' own events (``object_type`` ``dead_letter``) in one list. Returns the page and
    the cursor of the next one."""
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

    def branch(source: str, table: str, at: str, object_type: str, object_id: str) -> tuple[str, list[SQLParam]]:
        # Each table ordered and limited on its own index, then the two merged: a page costs
        # two index scans whatever the size of either table.
        where: list[str] = []
        params: list[SQLParam] = []
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
    events: list[AuditEventRow] = [{"id": f"{source}:{pk}", "at": at, "actor": actor, "action": action, "object_type": object_type,
               "object_id": object_id, "reason": reason, "diff": diff if isinstance(diff, dict) else json.loads(diff)}
              for source, pk, at, actor, action, object_type, object_id, reason, diff in rows[:size]]
    next_cursor = None
    if len(rows) > size:
        source, pk, at = rows[size - 1][0], rows[size - 1][1], rows[size - 1][2]
        raw = json.dumps({"t": at.isoformat(), "s": source, "i": pk})
        next_cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    return events, next_cursor
