"""``enqueue()``: how application code (views) starts a task."""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from celery import Task
from django.conf import settings
from django.db import transaction

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
) -> str:
    """Publish ``task`` once the surrounding transaction commits (at once outside one).

    Returns the task id, which is known before the message is sent; the task never starts
    before the rows its caller wrote are committed (celery#9617). Costs no database query.
    """
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
    task_id = task_id or str(uuid.uuid4())
    options: dict[str, Any] = {"task_id": task_id}
    if queue:
        options["queue"] = queue
    if countdown:
        options["countdown"] = countdown
    call_args, call_kwargs = list(args), dict(kwargs or {})
    transaction.on_commit(lambda: task_obj.apply_async(call_args, call_kwargs, **options))
    return task_id
