"""Enqueueing a task by name on a person's (or a client's) behalf: the API and the demo page.
Application code calls ``tasks.enqueue.enqueue()`` directly; this adds the role's task rule,
the checks of untrusted input and the audit record."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from dlq.roles import runnable_task
from dlq.services.audit import audit_record
from tasks.enqueue import enqueue_once
from tasks.queues import validate_queue
from tasks.registry import bind_arguments


@dataclass(frozen=True)
class Enqueued:
    task_id: str
    written: bool  # False: an earlier request with the same idempotency key wrote it


def task_enqueue(*, actor: str, role: str | None, task_name: str, args: list[Any], kwargs: dict[str, Any],
                 queue: str | None = None, countdown: float | None = None, idempotency_key: str | None = None,
                 idempotency_scope: str = "") -> Enqueued:
    """A person (or a client) enqueues a task by name: the role's task rule
    (``dlq.roles.runnable_task``), arguments that bind and fit, a known queue; then the outbox
    row and its audit record in one transaction. Every value is checked again here (it comes
    from a request): ``ValidationFailed`` (400), ``Forbidden`` (403), ``Conflict`` (409, an
    idempotency key reused for another request), ``QueueFull`` when the queue is full."""
    task = runnable_task(task_name, role=role)
    bind_arguments(task, args, kwargs)
    if queue is not None:
        validate_queue(queue)
    with transaction.atomic():
        task_id, written = enqueue_once(task, args=args, kwargs=kwargs, queue=queue, countdown=countdown,
                                        idempotency_key=idempotency_key, idempotency_scope=idempotency_scope)
        if written:
            audit_record(actor=actor, action="task.enqueue", object_type="task", object_id=task_id,
                         diff={"task": [None, task.name], "args": [None, args], "kwargs": [None, kwargs],
                               "queue": [None, queue], "countdown": [None, countdown],
                               "idempotency_key": [None, idempotency_key]})
    return Enqueued(task_id=task_id, written=written)
