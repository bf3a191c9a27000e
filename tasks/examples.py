"""Example tasks: patterns application code can copy. Always registered."""
from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.exceptions import Reject

from tasks.base import PlatformTask


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
    import time

    from celery.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except SoftTimeLimitExceeded:
            continue
    return seconds
