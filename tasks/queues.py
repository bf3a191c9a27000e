"""Which queues exist: the one rule for every queue name an operator or an API client gives.

The queues are the configured ones: ``CELERY_TASK_DEFAULT_QUEUE``, ``TASK_QUEUES`` (on
RabbitMQ the quorum queues declared at start), and any queue a registered task routes to
(its ``queue`` option). Anything else is refused with 400 ``unknown_queue``: a typo would
otherwise create a queue nobody consumes, and a name like ``_kombu.binding.celery`` is one of
kombu's own Redis keys, not a queue. Messages already in a queue (a dead letter's original
queue) are not checked: they came from the broker.
"""
from __future__ import annotations

from celery import current_app
from django.conf import settings

from tasks.errors import ValidationFailed


def known_queues() -> set[str]:
    names = {settings.CELERY_TASK_DEFAULT_QUEUE, *settings.TASK_QUEUES}
    names.update(q.name for q in getattr(settings, "CELERY_TASK_QUEUES", None) or [])
    routed = (getattr(task, "queue", None) for task in current_app.tasks.values())  # a task's own queue option
    names.update(queue for queue in routed if isinstance(queue, str))
    return names


def validate_queue(name: object, *, field: str = "queue") -> str:
    """``name`` if it is a known queue, else ``ValidationFailed`` (400)."""
    if not isinstance(name, str) or not name or name not in known_queues():
        shown = repr(name)[:100]
        raise ValidationFailed(f"unknown queue {shown}; the queues are {', '.join(sorted(known_queues()))} "
                               "(TASK_QUEUES adds more)", code="unknown_queue", fields={field: ["unknown queue"]})
    return name
