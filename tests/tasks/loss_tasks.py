"""Tasks for tests/tasks/test_broker_loss.py, loaded into its worker with ``-I``."""
from __future__ import annotations

import time

from celery import shared_task

from tasks.base import PlatformTask


@shared_task(base=PlatformTask, name="tests.cleanup_needs_the_broker")
def cleanup_needs_the_broker(key: str, seconds: float) -> str:
    """Its first run is long; its cleanup talks to the broker, as real cleanup code does (a
    lock release, a progress key), so a run terminated while the broker is down ends with a
    ConnectionError instead of the SystemExit that the terminate signal raised."""
    from demo.models import LedgerEntry
    from tasks.redis import redis_client

    first = not LedgerEntry.objects.filter(order_id=f"{key}-run").exists()
    LedgerEntry.objects.create(order_id=f"{key}-run", amount_cents=0)
    try:
        if first:
            time.sleep(seconds)
    finally:
        redis_client().ping()
    LedgerEntry.objects.create(order_id=key, amount_cents=1)
    return key
