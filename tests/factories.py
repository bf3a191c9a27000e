from __future__ import annotations

import uuid
from datetime import timedelta

import factory
from django.utils import timezone

from dlq.models import DeadLetter
from tasks.failures import fingerprint


class DeadLetterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DeadLetter

    task_id = factory.LazyFunction(lambda: str(uuid.uuid4()))
    task_name = "tasks.demo.add"
    queue = "celery"
    routing_key = "celery"
    args = factory.LazyFunction(lambda: [1, 2])
    kwargs = factory.LazyFunction(dict)
    exception_type = "ValueError"
    exception_message = factory.Sequence(lambda n: f"order {n} could not be charged")
    traceback = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom"
    reason = "non_retryable"
    attempts = factory.LazyFunction(lambda: [{"number": 1, "at": timezone.now().isoformat(), "exception_type": "ValueError", "message": "boom", "worker": "w@h"}])
    last_failed_at = factory.Sequence(lambda n: timezone.now() - timedelta(seconds=10_000 - n))
    first_failed_at = factory.LazyAttribute(lambda o: o.last_failed_at - timedelta(seconds=30))
    fingerprint = factory.LazyAttribute(lambda o: fingerprint(o.task_name, o.exception_type, o.exception_message))
