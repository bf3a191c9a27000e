"""The DLQ's own housekeeping tasks (scheduled by beat)."""
from __future__ import annotations

from celery import shared_task

from tasks.base import PlatformTask


@shared_task(base=PlatformTask, name="dlq.reconcile", dead_letter=False, max_retries=0, ignore_result=True)
def reconcile() -> int:
    """Write spooled dead letters once Postgres is back."""
    from dlq.spool import drain

    return drain()


@shared_task(base=PlatformTask, name="dlq.redrive_job", dead_letter=False, max_retries=10,
             retry_backoff=5, ignore_result=True)
def run_redrive_job(job_id: int) -> None:
    """Run a bulk action for about a minute (``dlq.services.redrive_job_run``), then continue
    in a fresh task; a crashed run is resumed by the redelivered message."""
    from dlq.models import RedriveJobStatus
    from dlq.services import redrive_job_run

    job = redrive_job_run(job_id=job_id)
    if job is not None and job.status == RedriveJobStatus.RUNNING:
        run_redrive_job.apply_async([job_id])
