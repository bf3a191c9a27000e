"""``enqueue()``: how application code (views) starts a task."""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from celery import Task
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from dlq.errors import ValidationFailed

# A countdown/ETA must stay below the broker's visibility timeout, or Redis redelivers the
# message to a second worker while the first still holds it (celery#4400): keep a margin.
VISIBILITY_MARGIN_SECONDS = 60


def max_countdown() -> int:
    return max(0, settings.CELERY_VISIBILITY_TIMEOUT - VISIBILITY_MARGIN_SECONDS)


def enqueue(
    task: str | Task,
    *,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    countdown: float | None = None,
    task_id: str | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Publish ``task`` once the surrounding transaction commits (at once outside one).

    Returns the task id, known before the message is sent; the task never starts before the
    rows its caller wrote are committed (celery#9617). Without an idempotency key it costs
    no database query. With ``idempotency_key``, the same key within
    ``IDEMPOTENCY_KEY_TTL`` returns the first task id and publishes nothing. Raises
    ``tasks.backpressure.QueueFull`` when the target queue is over its high-water mark.
    """
    return enqueue_once(task, args=args, kwargs=kwargs, queue=queue, countdown=countdown, task_id=task_id,
                        idempotency_key=idempotency_key)[0]


def enqueue_once(
    task: str | Task,
    *,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    countdown: float | None = None,
    task_id: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[str, bool]:
    """``enqueue()`` that also says whether it published (False: an earlier enqueue with the
    same idempotency key did)."""
    from tasks.backpressure import check_capacity
    from tasks.registry import get_task

    task_obj = get_task(task) if isinstance(task, str) else task
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
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str) or not idempotency_key or len(idempotency_key) > 255:
            raise ValidationFailed("idempotency_key must be 1 to 255 characters", fields={"idempotency_key": ["invalid"]})
        existing = _existing_key(idempotency_key)
        if existing:
            return existing, False
    target_queue = queue or getattr(task_obj, "queue", None) or settings.CELERY_TASK_DEFAULT_QUEUE
    check_capacity(target_queue)
    task_id = task_id or str(uuid.uuid4())
    options: dict[str, Any] = {"task_id": task_id}
    if queue:
        options["queue"] = queue
    if countdown:
        options["countdown"] = countdown
    call_args, call_kwargs = list(args), dict(kwargs or {})
    if idempotency_key is None:
        transaction.on_commit(lambda: task_obj.apply_async(call_args, call_kwargs, **options))
        return task_id, True
    with transaction.atomic():
        claimed = _claim_key(idempotency_key, task_id, task_obj.name)
        if claimed != task_id:
            return claimed, False

        def publish() -> None:
            try:
                task_obj.apply_async(call_args, call_kwargs, **options)
            except Exception:
                # Nothing was sent: free the key so that the producer's retry can publish.
                from dlq.models import IdempotencyKey

                IdempotencyKey.objects.filter(key=idempotency_key, task_id=task_id).delete()
                raise

        transaction.on_commit(publish)
    return task_id, True


def _existing_key(key: str) -> str | None:
    from dlq.models import IdempotencyKey

    return IdempotencyKey.objects.filter(key=key, expires_at__gt=timezone.now()).values_list("task_id", flat=True).first()


def _claim_key(key: str, task_id: str, task_name: str) -> str:
    """Insert the key (or take over an expired one); return the task id that owns it.
    A concurrent claim of the same key waits on the unique index and then sees the winner."""
    from dlq.models import IdempotencyKey

    table = IdempotencyKey._meta.db_table
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} AS k (key, task_id, task_name, created_at, expires_at) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET task_id = EXCLUDED.task_id, task_name = EXCLUDED.task_name, "
            "created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at WHERE k.expires_at <= %s "
            "RETURNING task_id",
            [key, task_id, task_name, now, now + timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL), now],
        )
        row = cursor.fetchone()
        if row:
            return str(row[0])
        cursor.execute(f"SELECT task_id FROM {table} WHERE key = %s", [key])
        return str(cursor.fetchone()[0])
