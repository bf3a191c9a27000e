"""Bulk actions over dead letters: a dry run, the start of a redrive job, its cancellation.
The job itself runs in ``redrive_engine`` (a Celery task, started after the job's commit)."""
from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.db import transaction
from django.db.models import Count, Max, QuerySet
from django.utils import timezone

from dlq.filters import DeadLetterFilters, dead_letter_filters_apply, dead_letter_filters_clean
from dlq.models import TERMINAL_JOB_STATUSES, BulkAction, DeadLetter, DeadLetterStatus, RedriveJob, RedriveJobStatus
from dlq.services.audit import audit_record
from dlq.services.dead_letters import require_reason
from tasks.errors import Conflict, NotFound, ValidationFailed
from tasks.queues import validate_queue

logger = logging.getLogger("dlq")

#: The statuses a bulk action may move a dead letter from.
ELIGIBLE = {
    BulkAction.REQUEUE: (DeadLetterStatus.DEAD,),
    BulkAction.DISCARD: (DeadLetterStatus.DEAD,),
    BulkAction.RESOLVE: (DeadLetterStatus.DEAD, DeadLetterStatus.REQUEUED),
}
MAX_BULK_IDS = 10_000
MAX_RATE_LIMIT = 1_000_000


def redrive_selection(action: str, ids: list[int] | None, filters: DeadLetterFilters) -> QuerySet[DeadLetter]:
    """The rows a bulk action covers now: the filter, the ids, and the statuses it moves from
    (re-read for every batch of a job, so rows changed meanwhile drop out)."""
    qs = dead_letter_filters_apply(DeadLetter.objects.all(), filters).filter(status__in=ELIGIBLE[BulkAction(action)])
    if ids is not None:
        qs = qs.filter(pk__in=ids)
    return qs


def redrive_job_filters(job: RedriveJob) -> DeadLetterFilters:
    """The job's stored filter (text values), cleaned again."""
    return dead_letter_filters_clean(job.filters or {})


def dead_letters_bulk_preview(*, action: object, ids: object = None, filters: object = None,
                              sample_size: int = 10) -> dict[str, Any]:
    """Dry run: how many rows the action would touch, and a few of them."""
    clean_action, clean_ids, clean = _bulk_args(action, ids, filters)
    qs = redrive_selection(clean_action, clean_ids, clean)
    sample = list(qs.order_by("-last_failed_at", "-id").values(
        "id", "task_name", "exception_type", "status", "last_failed_at")[:sample_size])
    return {"action": clean_action, "count": qs.count(), "sample": sample}


@transaction.atomic
def dead_letters_bulk_start(
    *, actor: str, action: object, reason: object, ids: object = None, filters: object = None,
    rate_limit: object = None, queue: object = None,
) -> RedriveJob:
    """Create a redrive job over the selection and start it (a Celery task, after commit)."""
    reason = require_reason(reason)
    clean_action, clean_ids, clean = _bulk_args(action, ids, filters)
    if rate_limit is not None and (isinstance(rate_limit, bool) or not isinstance(rate_limit, (int, float))
                                   or not 0 < rate_limit <= MAX_RATE_LIMIT):
        raise ValidationFailed("rate_limit must be a positive number of messages per second",
                               fields={"rate_limit": ["positive number"]})
    target = validate_queue(queue) if queue is not None else ""
    if target and clean_action != BulkAction.REQUEUE:
        raise ValidationFailed("queue only applies to requeue", fields={"queue": ["only with requeue"]})
    qs = redrive_selection(clean_action, clean_ids, clean)
    summary = qs.aggregate(total=Count("id"), max_id=Max("id"))
    job = RedriveJob.objects.create(
        action=clean_action, actor=actor, reason=reason, filters={k: str(v) for k, v in clean.items()}
        if clean else {}, ids=clean_ids, queue=target, rate_limit=rate_limit,
        total=summary["total"] or 0, max_id=summary["max_id"] or 0,
    )
    audit_record(actor=actor, action="job.start", object_type="redrive_job", object_id=job.pk, reason=reason,
                 diff={"action": [None, clean_action], "total": [None, job.total], "filters": [None, job.filters],
                       "ids": [None, len(clean_ids) if clean_ids is not None else None], "queue": [None, job.queue],
                       "rate_limit": [None, rate_limit]})
    logger.info("redrive_job.created job_id=%s action=%s total=%s actor=%s", job.pk, clean_action, job.total, actor,
                extra={"job_id": job.pk, "actor": actor})
    job_id = job.pk
    transaction.on_commit(lambda: redrive_job_dispatch(job_id=job_id))
    return job


REDRIVE_TASK = "dlq.redrive_job"


def redrive_job_dispatch(*, job_id: int) -> None:
    """Send the job's Celery task (``dlq.redrive_job``), which runs ``redrive_job_run``. A test
    that plays the runner itself replaces this function (``dlq.services.redrive``).

    Looked up by its (stable) name: the task module ``dlq.tasks`` imports the services."""
    current_app.tasks[REDRIVE_TASK].apply_async((job_id,))


@transaction.atomic
def redrive_job_cancel(*, job_id: int, actor: str) -> RedriveJob:
    job = RedriveJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"redrive job {job_id} does not exist")
    if job.status in TERMINAL_JOB_STATUSES:
        raise Conflict(f"the job is already {job.status}", code="bad_status")
    before = job.status
    job.status = RedriveJobStatus.CANCELLED
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at"])
    audit_record(actor=actor, action="job.cancel", object_type="redrive_job", object_id=job.pk,
                 diff={"status": [before, job.status], "done": [None, job.done]})
    logger.info("redrive_job.cancelled job_id=%s actor=%s", job.pk, actor, extra={"job_id": job.pk, "actor": actor})
    return job


def _bulk_args(action: object, ids: object, filters: object) -> tuple[str, list[int] | None, DeadLetterFilters]:
    if not isinstance(action, str) or action not in BulkAction.values:
        raise ValidationFailed(f"action must be one of {', '.join(BulkAction.values)}", fields={"action": ["invalid"]})
    if ids is None and filters is None:
        raise ValidationFailed("give ids or a filter", code="no_selection", fields={"ids": ["ids or filter required"]})
    clean_ids: list[int] | None = None
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ValidationFailed("ids must be a list of integers", fields={"ids": ["list of integers"]})
        if len(ids) > MAX_BULK_IDS:
            raise ValidationFailed(f"at most {MAX_BULK_IDS} ids; use a filter for more", fields={"ids": ["too many"]})
        clean_ids = sorted(set(ids))
    return action, clean_ids, dead_letter_filters_clean(filters)
