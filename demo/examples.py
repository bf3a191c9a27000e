"""Example tasks: patterns application code can copy. Registered in development only (the
``demo`` app is installed only then): none of them belongs in production. Their names stay
``tasks.examples.*`` (a task's name outlives the module it is written in)."""
from __future__ import annotations

import logging
import os
import signal
import time
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from django.db.models import Count
from django.utils import timezone

from demo.models import LedgerEntry
from dlq.models import DeadLetter
from tasks.base import PlatformTask
from tasks.idempotency import idempotent
from tasks.redis import redis_client


@shared_task(base=PlatformTask, name="tasks.examples.validate_order", bind=True, enqueueable=True)
def validate_order(self: PlatformTask, order: dict[str, Any]) -> str:
    """Rejects (never retries) an order that cannot be valid: it becomes a dead letter with
    reason ``rejected`` that an operator can fix and requeue."""
    if not isinstance(order, dict) or not order.get("sku") or int(order.get("quantity", 0)) <= 0:
        raise Reject(f"invalid order {order!r}: needs a sku and a positive quantity", requeue=False)
    return f"ok {order['sku']} x{order['quantity']}"


@shared_task(base=PlatformTask, name="tasks.examples.stubborn_sleep", enqueueable=True,
             soft_time_limit=10, time_limit=15)
def stubborn_sleep(seconds: float) -> float:
    """Ignores its soft time limit (as code stuck in a C call would), so only the hard limit,
    which kills the pool process, stops it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except SoftTimeLimitExceeded:
            continue
    return seconds


@shared_task(base=PlatformTask, name="tasks.examples.daily_digest", bind=True)
def daily_digest(self: PlatformTask) -> dict[str, int]:
    """Example scheduled application job: yesterday's dead letters by task, logged."""
    since = timezone.now() - timedelta(days=1)
    counts = dict(DeadLetter.objects.filter(created_at__gte=since).values_list("task_name")
                  .annotate(n=Count("id")).order_by())
    logging.getLogger("tasks").info("daily_digest dead_letters=%s", counts, extra={"counts": counts})
    return counts


@shared_task(base=PlatformTask, name="tasks.examples.beat_probe", bind=True, ignore_result=True)
def beat_probe(self: PlatformTask) -> None:
    """Records each run under its scheduled time (used to prove one run per beat tick)."""
    slot = getattr(self.request, "dlq_scheduled_at", "unscheduled")
    redis_client().hincrby("beat-probe:runs", str(slot), 1)


@shared_task(base=PlatformTask, name="tasks.examples.charge_order", bind=True, enqueueable=True)
def charge_order(self: PlatformTask, order_id: str, amount_cents: int, crash_after_charge: bool = False) -> str:
    """Charges an order exactly once, however often it runs (``tasks.idempotency``).
    ``crash_after_charge`` kills the worker process right after the first charge committed,
    before the message is acked, to show that the redelivered run does not charge again."""
    with idempotent(f"charge:{order_id}") as first_time:
        if first_time:
            LedgerEntry.objects.create(order_id=order_id, amount_cents=amount_cents)
    if first_time and crash_after_charge:
        os.kill(os.getpid(), signal.SIGKILL)
    return "charged" if first_time else "already charged"
