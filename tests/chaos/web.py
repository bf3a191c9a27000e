"""The chaos view (F15-F17), served only by the chaos web server (``tests.chaos.settings``).

``POST /chaos/order`` with ``key=<key>``: in one ``transaction.atomic()`` it inserts the
business row ``chaos_order(key)`` and enqueues ``chaos.work(key, "ok", True, 0)`` (an
idempotent task that succeeds) through the product's ``tasks.enqueue.enqueue``, then answers
201 ``{"key", "task_id"}``. No CSRF, no authentication: it is reachable only on the port the
harness gave its own gunicorn.

Negative control ``CHAOS_CONTROL=on_commit_publish`` (read here, in the web processes, only):
what ``enqueue()`` did before the outbox, ``transaction.on_commit(apply_async)``. The row
commits first; a broker that is down (F15) makes ``apply_async`` raise from the commit
callback (a 500 for a committed row), and a process killed between the commit and the publish
(F16) drops the message; either way the task never runs.
"""
from __future__ import annotations

import os
import uuid

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from tasks.enqueue import enqueue
from tests.chaos.tasks import work

CONTROL = os.environ.get("CHAOS_CONTROL", "")


@csrf_exempt
@require_POST
def order(request: HttpRequest) -> HttpResponse:
    key = request.POST.get("key", "")
    if not key:
        return JsonResponse({"error": {"code": "invalid", "message": "key is required"}}, status=400)
    args = [key, "ok", True, 0]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO chaos_order (key) VALUES (%s)", [key])
        if CONTROL == "on_commit_publish":
            task_id = str(uuid.uuid4())
            transaction.on_commit(lambda: work.apply_async(args, task_id=task_id))
        else:
            task_id = enqueue(work, args=args)
    return JsonResponse({"key": key, "task_id": task_id}, status=201)
