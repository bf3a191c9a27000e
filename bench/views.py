"""The view of S1 ("enqueue from a view"), in its two versions: a request that records an order
(a row of the bench's own ``bench_order`` table) and starts a task for it, both in one
``transaction.atomic()``.

- ``order_create`` is the application code the platform asks for: ``enqueue()`` writes the
  message to the outbox in the view's transaction; the relay publishes it after the commit.
- ``order_create_on_commit`` is what ``enqueue()`` did before the outbox (issue 17):
  ``transaction.on_commit(apply_async)``, the broker round trip inside the request, with the
  task id chosen up front so that the view can answer with it, as ``enqueue()`` did.

Both parse the same JSON body and answer 202 with the same JSON.
"""
from __future__ import annotations

import json
import uuid

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse

from bench import tasks as bt
from tasks.enqueue import enqueue

TABLE = "bench_order"


def orders_table_reset() -> None:
    """Create ``bench_order`` (a small business table, raw SQL: the bench has no app) or empty it."""
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, n integer NOT NULL, "
                       "note text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
        cursor.execute(f"TRUNCATE {TABLE} RESTART IDENTITY")


def _order_insert(n: int, note: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {TABLE} (n, note) VALUES (%s, %s) RETURNING id", [n, note])
        return int(cursor.fetchone()[0])


def order_create(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)
    n, queue = int(body["n"]), str(body["queue"])
    with transaction.atomic():
        order_id = _order_insert(n, body.get("note", ""))
        task_id = enqueue(bt.platform_noop, args=[n], queue=queue)
    return JsonResponse({"order": order_id, "task_id": task_id}, status=202)


def order_create_on_commit(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)
    n, queue = int(body["n"]), str(body["queue"])
    with transaction.atomic():
        order_id = _order_insert(n, body.get("note", ""))
        task_id = str(uuid.uuid4())
        transaction.on_commit(lambda: bt.plain_noop.apply_async([n], queue=queue, task_id=task_id))
    return JsonResponse({"order": order_id, "task_id": task_id}, status=202)
