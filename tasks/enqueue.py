"""``enqueue()``: how application code (views) starts a task.

The message is written to the outbox table (``tasks.OutboxMessage``) in the caller's
transaction, with one ``INSERT``; the relay (``tasks.relay``, ``manage.py outbox_relay``)
publishes it once that transaction has committed. So the task and the rows its caller wrote
commit or roll back together: a rollback publishes nothing, and a commit publishes the task
even if the broker is down at that moment or the web process dies right after the commit
(both lose the task with ``transaction.on_commit(apply_async)``, the dual-write problem).
Delivery is at least once (see ``tasks.relay``).

What ``apply_async`` checks at the call, ``enqueue()`` checks too, before writing anything:
the arguments bind to the task's signature (``TypeError``, unless the task sets
``typing = False``) and serialise to JSON (kombu's ``EncodeError``).
"""
from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Task, current_app
from django.conf import settings
from kombu.exceptions import EncodeError
from kombu.utils.json import dumps as kombu_dumps

from tasks.backpressure import check_capacity
from tasks.errors import ValidationFailed
from tasks.outbox import OutboxRow, outbox_insert
from tasks.registry import get_task

# A countdown/ETA must stay below the broker's visibility timeout, or Redis redelivers the
# message to a second worker while the first still holds it (celery#4400): keep a margin.
VISIBILITY_MARGIN_SECONDS = 60


def max_countdown() -> int:
    return max(0, settings.CELERY_VISIBILITY_TIMEOUT - VISIBILITY_MARGIN_SECONDS)


def enqueue(
    task: str | Task[Any, Any],
    *,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    countdown: float | None = None,
    task_id: str | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Write ``task``'s message to the outbox in the current transaction (committed at once
    outside one); the relay publishes it after the commit.

    Returns the task id; the task never starts before the rows its caller wrote are
    committed (celery#9617). Costs one ``INSERT``. With ``idempotency_key``, the same key
    within ``IDEMPOTENCY_KEY_TTL`` for the same task, arguments and queue returns the first
    task id and writes nothing; for another request it raises ``tasks.errors.Conflict``. Raises
    ``tasks.backpressure.QueueFull`` when the target queue (broker and outbox together) is
    over its high-water mark.
    """
    return enqueue_once(task, args=args, kwargs=kwargs, queue=queue, countdown=countdown, task_id=task_id,
                        idempotency_key=idempotency_key)[0]


def enqueue_once(
    task: str | Task[Any, Any],
    *,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    countdown: float | None = None,
    task_id: str | None = None,
    idempotency_key: str | None = None,
    idempotency_scope: str = "",
    headers: dict[str, Any] | None = None,
) -> tuple[str, bool]:
    """``enqueue()`` that also says whether it wrote a message (False: an earlier enqueue
    with the same idempotency key, for the same task, arguments and queue, did, and its task
    id is returned). ``idempotency_scope`` keeps one client's keys apart from another's (the
    API passes its user); the same key in one scope for another request raises ``Conflict``."""
    task_obj = get_task(task) if isinstance(task, str) else task
    options: dict[str, Any] = {}
    if countdown is not None:
        if not isinstance(countdown, (int, float)) or isinstance(countdown, bool) or countdown < 0:
            raise ValidationFailed("countdown must be a non-negative number", fields={"countdown": ["invalid"]})
        if countdown > max_countdown():
            raise ValidationFailed(
                f"countdown {countdown}s exceeds the broker visibility timeout margin ({max_countdown()}s): "
                "the message would be delivered twice. Raise CELERY_VISIBILITY_TIMEOUT or schedule it with beat.",
                code="countdown_too_long",
                fields={"countdown": [f"at most {max_countdown()}"]},
            )
        if countdown:
            # Fixed now, as apply_async fixes it when called: the relay's delay does not move it.
            options["eta"] = (datetime.now(UTC) + timedelta(seconds=countdown)).isoformat()
    if idempotency_key is not None and (not isinstance(idempotency_key, str) or not idempotency_key
                                        or len(idempotency_key) > 255 or "\x00" in idempotency_key):
        raise ValidationFailed("idempotency_key must be 1 to 255 characters", fields={"idempotency_key": ["invalid"]})
    call_args, call_kwargs = list(args), dict(kwargs or {})
    if getattr(task_obj, "typing", False) and hasattr(task_obj, "__header__"):
        task_obj.__header__(*call_args, **call_kwargs)  # what apply_async checks: TypeError if they do not bind
    try:
        payload = kombu_dumps([call_args, call_kwargs])
        header_json = json.dumps(headers or {}, allow_nan=False)  # a jsonb column: no NaN, no NUL
    except (TypeError, ValueError) as exc:
        raise EncodeError(exc) from exc
    if "\\u0000" in header_json:
        raise EncodeError("message headers cannot hold NUL characters")
    parent = current_app.current_worker_task  # enqueued from inside a task: link it as send_task would
    if parent is not None:
        options["root_id"] = parent.request.root_id or parent.request.id
        options["parent_id"] = parent.request.id
    # Routed by name as before: the explicit queue, the task's, or the default one (the relay
    # publishes to it; backpressure counts it).
    target_queue = queue or getattr(task_obj, "queue", None) or settings.CELERY_TASK_DEFAULT_QUEUE
    check_capacity(target_queue)
    request_hash = ""
    if idempotency_key:
        identity = json.dumps([task_obj.name, call_args, call_kwargs, target_queue], sort_keys=True, default=str)
        request_hash = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()
    row = OutboxRow(task_id=task_id or str(uuid.uuid4()), task_name=task_obj.name, queue=target_queue,
                    payload=payload, headers=header_json, options=options, idempotency_key=idempotency_key or "",
                    idempotency_scope=idempotency_scope, request_hash=request_hash)
    return outbox_insert(row)
