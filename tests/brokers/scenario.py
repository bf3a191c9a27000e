"""Capture and requeue end to end, run as its own process so that it can use whichever
broker ``CELERY_BROKER_URL`` names (Redis or RabbitMQ). Prints one JSON line of results.

    python -m tests.brokers.scenario QUEUE
"""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any


def wait(predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out: {predicate}")


def main(queue: str) -> dict[str, Any]:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskplatform.settings")
    django.setup()
    from django_celery_results.models import TaskResult

    from demo.tasks import divide, flaky
    from dlq import services
    from dlq.models import DeadLetter
    from tasks.enqueue import enqueue

    out: dict[str, Any] = {"broker": os.environ["CELERY_BROKER_URL"].split(":")[0]}
    task_id = enqueue(divide, args=[1, 0], queue=queue)
    row = wait(lambda: DeadLetter.objects.filter(task_id=task_id).first())
    out["captured"] = {"reason": row.reason, "queue": row.queue, "attempts": len(row.attempts)}
    row = services.dead_letter_update(dead_letter_id=row.pk, actor="scenario", reason="fix", version=row.version, args=[1, 4])
    new_id = services.dead_letter_requeue(dead_letter_id=row.pk, actor="scenario", reason="fixed")
    resolved = wait(lambda: DeadLetter.objects.filter(pk=row.pk, status="resolved").first())
    out["requeued"] = {"status": resolved.status, "result": TaskResult.objects.get(task_id=new_id).result}

    key = uuid.uuid4().hex
    retried = flaky.apply_async([key, 1], queue=queue)
    out["retry_then_success"] = wait(lambda: TaskResult.objects.filter(task_id=retried.id, status="SUCCESS")
                                     .values_list("result", flat=True).first())
    dying = flaky.apply_async([uuid.uuid4().hex, 10], queue=queue)
    dead = wait(lambda: DeadLetter.objects.filter(task_id=dying.id).first(), timeout=90)
    out["exhausted"] = {"reason": dead.reason, "attempts": [a["number"] for a in dead.attempts]}
    out["dead_letters"] = DeadLetter.objects.filter(task_id__in=[task_id, retried.id, dying.id]).count()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
