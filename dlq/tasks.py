"""The DLQ's own housekeeping tasks (scheduled by beat, see dlq/services/schedules.py)."""
from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from dlq import services
from dlq.models import RedriveJobStatus
from dlq.spool import drain
from tasks.base import PlatformTask


@shared_task(base=PlatformTask, name="dlq.reconcile", dead_letter=False, max_retries=0)
def reconcile() -> dict[str, int]:
    """Write spooled dead letters, return lost requeues to dead, resume stalled jobs."""
    return {
        "spool_drained": drain(),
        "stuck_requeues": services.dead_letters_reconcile_stuck_requeues(
            older_than_minutes=settings.DLQ_STUCK_REQUEUE_MINUTES),
        "jobs_resumed": services.redrive_jobs_resume_stalled(),
    }


@shared_task(base=PlatformTask, name="dlq.check_alerts", dead_letter=False, max_retries=0)
def check_alerts() -> dict[str, list[str]]:
    return services.alerts_check()


@shared_task(base=PlatformTask, name="dlq.apply_reprocess_policies", dead_letter=False, max_retries=0)
def apply_reprocess_policies() -> dict[str, int]:
    return services.reprocess_policies_apply()


@shared_task(base=PlatformTask, name="dlq.prune", dead_letter=False, max_retries=2)
def prune() -> dict[str, int]:
    """Retention, a few minutes at a time (well inside the default time limit); when more is
    left it continues in a new task."""
    deleted = services.dead_letters_prune(older_than_days=settings.DLQ_RETENTION_DAYS, time_budget=240)
    if deleted.more:
        prune.apply_async(countdown=1)
    return {"dead_letters": deleted.count, **services.housekeeping_prune_other_tables(older_than_days=90)}


@shared_task(base=PlatformTask, name="dlq.redrive_job", bind=True, dead_letter=False, max_retries=10,
             retry_backoff=5, ignore_result=True)
def run_redrive_job(self: Any, job_id: int) -> None:
    """Run a bulk action for about a minute (``dlq.services.redrive_job_run``), then continue
    in a fresh task; a crashed run is resumed by the redelivered message. A job whose runs
    keep failing is marked failed (and alerted) once the retries are spent."""
    try:
        job = services.redrive_job_run(job_id=job_id)
    except Exception as exc:
        if self.request.retries >= self.max_retries:
            services.redrive_job_fail(job_id=job_id, error=f"{type(exc).__name__}: {exc}")
            return
        raise
    if job is not None and job.status == RedriveJobStatus.RUNNING:
        run_redrive_job.apply_async((job_id,))
