"""The DLQ's own housekeeping tasks (scheduled by beat)."""
from __future__ import annotations

from celery import shared_task

from tasks.base import PlatformTask


@shared_task(base=PlatformTask, name="dlq.reconcile", dead_letter=False, max_retries=0, ignore_result=True)
def reconcile() -> int:
    """Write spooled dead letters once Postgres is back."""
    from dlq.spool import drain

    return drain()
