"""The outbox table's SQL: the one-statement write of ``enqueue()`` and what operators read
(rows waiting, the oldest one's age, rows per queue for backpressure). The relay that
publishes and deletes the rows is ``tasks.relay``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection

from tasks.errors import Conflict
from tasks.models import IdempotencyKey, OutboxMessage


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRow:
    """The values of one outbox row."""

    task_id: str
    task_name: str
    queue: str
    payload: str
    headers: str  # JSON
    options: dict[str, Any]
    idempotency_key: str
    idempotency_scope: str = ""
    request_hash: str = ""


def outbox_insert(row: OutboxRow) -> tuple[str, bool]:
    """One statement: the outbox row, and with an idempotency key the key's claim in the same
    ``INSERT`` (a data-modifying CTE): the row is written only if this call claimed the key.
    Returns the task id that owns the key (this one, or the first) and whether a row was
    written; raises ``Conflict`` (``idempotency_key_reused``) when the key, in its scope, was
    used for another task, other arguments or another queue."""
    outbox = OutboxMessage._meta.db_table
    columns = "task_id, task_name, queue, payload, headers, options, idempotency_key"
    values = [row.task_id, row.task_name, row.queue, row.payload, row.headers, json.dumps(row.options),
              row.idempotency_key]
    with connection.cursor() as cursor:
        if not row.idempotency_key:
            cursor.execute(f"INSERT INTO {outbox} ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s)", values)
            return row.task_id, True
        keys = IdempotencyKey._meta.db_table
        # A key that expired may be taken over; a live one belongs to the first task id. A
        # concurrent claim of the same key waits on the unique index, then sees the winner.
        cursor.execute(
            f"WITH claim AS ("
            f" INSERT INTO {keys} AS k (scope, key, request_hash, task_id, task_name, created_at, expires_at)"
            f" VALUES (%s, %s, %s, %s, %s, now(), now() + %s * interval '1 second')"
            f" ON CONFLICT (scope, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, task_id = EXCLUDED.task_id,"
            f" task_name = EXCLUDED.task_name, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at"
            f" WHERE k.expires_at <= now()"
            f" RETURNING task_id, request_hash"
            f"), message AS ("
            f" INSERT INTO {outbox} ({columns}) SELECT %s, %s, %s, %s, %s, %s, %s FROM claim RETURNING 1"
            f") SELECT task_id, true, request_hash FROM claim"
            f" UNION ALL SELECT task_id, false, request_hash FROM {keys} WHERE scope = %s AND key = %s"
            f" AND NOT EXISTS (SELECT 1 FROM claim)",
            [row.idempotency_scope, row.idempotency_key, row.request_hash, row.task_id, row.task_name,
             settings.IDEMPOTENCY_KEY_TTL, *values, row.idempotency_scope, row.idempotency_key],
        )
        found = cursor.fetchone()
        if found is None:
            # The key was claimed by a transaction that committed after this statement's
            # snapshot was taken: read it with a fresh one.
            cursor.execute(f"SELECT task_id, false, request_hash FROM {keys} WHERE scope = %s AND key = %s",
                           [row.idempotency_scope, row.idempotency_key])
            found = cursor.fetchone()
    task_id, written, request_hash = str(found[0]), bool(found[1]), str(found[2])
    if not written and request_hash != row.request_hash:
        raise Conflict(f"idempotency key {row.idempotency_key!r} was used for another task, other arguments or "
                       f"another queue (task {task_id}); use a new key for a new request",
                       code="idempotency_key_reused")
    return task_id, written


@dataclass(frozen=True)
class OutboxStats:
    rows: int
    oldest_age_seconds: float


def outbox_stats() -> OutboxStats:
    """How many messages wait in the outbox and how long the oldest has waited. A table
    that is empty but for milliseconds at a time: a count is cheap; during a broker outage it
    grows, and this is what the alert and the overview watch."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
                       f"FROM {OutboxMessage._meta.db_table}")
        rows, age = cursor.fetchone()
    return OutboxStats(rows=int(rows), oldest_age_seconds=max(0.0, float(age)))


def outbox_depth(queue: str) -> int:
    """Messages for ``queue`` committed to the outbox and not published yet."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {OutboxMessage._meta.db_table} WHERE queue = %s", [queue])
        return int(cursor.fetchone()[0])
