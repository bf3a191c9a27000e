"""Create the demo operator and a few demo dead letters, only on an empty database
(``./dev up`` runs it; the command exists in development only, with the ``demo`` app)."""
from __future__ import annotations

import os
import traceback
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from demo.tasks import TransientError
from dlq.models import DeadLetter, DeathReason, Role
from dlq.roles import ensure_role_groups
from dlq.services import dead_letter_capture
from tasks.failures import CapturedFailure, attempt_record, qualified_name


def _failure(task_name: str, args: list[Any], exc: Exception, reason: str, tries: int) -> CapturedFailure:
    try:
        raise exc
    except Exception:
        tb = traceback.format_exc()
    attempts = [attempt_record(n, exc, "worker@demo") for n in range(1, tries + 1)]
    return CapturedFailure(
        task_id=str(uuid.uuid4()), task_name=task_name, reason=reason, exception_type=qualified_name(type(exc)),
        exception_message=str(exc), traceback=tb, queue="celery", routing_key="celery", args=args, kwargs={},
        attempts=attempts, retries=tries - 1,
    )


class Command(BaseCommand):
    help = "Seed a demo operator account and demo dead letters on an empty database."

    def handle(self, *args: Any, **options: Any) -> None:
        groups = ensure_role_groups()
        User = get_user_model()
        username = os.environ.get("DEMO_USER", "demo")
        if not User.objects.exists():
            user = User.objects.create_user(username, password=os.environ.get("DEMO_PASSWORD", "demo-password"),
                                            is_staff=True)
            user.groups.add(groups[Role.ADMIN])
            self.stdout.write(f"created demo operator {username!r} (role admin)")
        if not DeadLetter.objects.exists():
            for i in range(3):
                dead_letter_capture(failure=_failure("tasks.demo.divide", [i + 1, 0], ZeroDivisionError("division by zero"),
                                                     DeathReason.NON_RETRYABLE, 1))
            for i in range(2):
                dead_letter_capture(failure=_failure(
                    "tasks.demo.flaky", [f"order-{1000 + i}", 9],
                    TransientError(f"attempt 4 of key 'order-{1000 + i}' fails on purpose (9 failures asked)"),
                    DeathReason.MAX_RETRIES_EXCEEDED, 4))
            self.stdout.write("seeded 5 demo dead letters")
